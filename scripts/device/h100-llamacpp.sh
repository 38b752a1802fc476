#!/usr/bin/env bash
# Device call 2 (one H100): the whole platform on a real GPU with a real engine.
#   1. `model synth` a llama-2-7b-shape f16 random GGUF (hidden 4096, 32 layers, 32 heads,
#      ffn 11008, vocab 32000: 13.5 GB);
#   2. `inferplane up --agent nvidia --gpu-sharing 2` (the real node agent: nvidia-smi inventory
#      and telemetry), register the model, deploy it on llama.cpp (all layers on the GPU);
#   3. `inferplane bench` directly against llama-server and through the gateway, interleaved, at
#      concurrency 1, 16 and 48 on the reference workload (1,000-token unique prompts, 128 output
#      tokens, streaming /v1/completions, ignore_eos), plus 1,500 shared + 100 unique at 16;
#   4. GPU telemetry: /metrics and `inferplane describe node` while the GPU is busy;
#   5. two llama.cpp replicas on the one GPU: round-robin vs prefix-aware routing on a
#      shared-prefix workload (two rounds each, fresh prefixes per run).
# Everything it measures goes to $OUT/results.tar (bench summaries, metrics, describe) and
# $OUT/run.log. Prerequisites: scripts/device/pack.sh, and .device/llamacpp-cuda.tar.xz from
# scripts/device/build-llamacpp-cuda.sh. How it was run (device tool, repo root):
#   run(command="bash scripts/device/h100-llamacpp.sh", carry=[".device"], timeout_s=600)
# Environment knobs: PHASES (default "direct-gateway telemetry replicas"), N1/N16/N48 (requests),
# PREFIX_ROW=0 (skip the shared-prefix reference row),
# SYNTH (model shape flags; a tiny one for a dry run on a CPU build with a stand-in nvidia-smi).
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
T0=$(date +%s)
el() { echo $(($(date +%s) - T0)); }
log() { echo "[$(el)s] $*"; }
source scripts/device/setup.sh
R=/tmp/results && rm -rf $R && mkdir -p $R
# A fresh state dir: a warm machine keeps /tmp, and an old one restores its deployments (the
# second attempt lost its call to that: the earlier two-replica deployment held the GPU).
rm -rf /tmp/st
PHASES=${PHASES:-"direct-gateway telemetry replicas"}
N1=${N1:-24}
N16=${N16:-80}
N48=${N48:-144}
finish() {
  cp -f /tmp/st/logs/inferplane.log $R/platform.log 2>/dev/null
  for f in /tmp/st/logs/*.log; do tail -c 200000 "$f" > "$R/$(basename "$f").tail" 2>/dev/null; done
  # Summaries only: the raw per-request exports and HTML reports stay here.
  tar -C $R -cf "$OUT/results.tar" --exclude='profile_export.jsonl' --exclude='report.html' .
  log "done; results.tar $(du -h "$OUT/results.tar" | cut -f1)"
}
trap finish EXIT

# Environment metadata.
{
  echo "date: $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,pci.bus_id,compute_cap --format=csv,noheader
  nvidia-smi | grep -o 'CUDA Version: [0-9.]*'
  nvcc --version | tail -2 | head -1
  echo "node: $(node --version)"
  cat $INFERPLANE_CACHE_DIR/engines/llamacpp/*/build.json
  echo "cpus: $(nproc)"
  uname -r
} > $R/env.txt 2>&1
cat $R/env.txt

# 1. The model.
mkdir -p /tmp/m
log "synth 7B-shape f16"
# shellcheck disable=SC2086
inferplane model synth ${SYNTH:---hidden 4096 --layers 32 --heads 32 --ffn 11008 --vocab 32000} \
  --out /tmp/m/rand-7b.gguf --json > $R/synth.json 2> /tmp/synth.err || { tail /tmp/synth.err; exit 1; }
cat $R/synth.json

# 2. The platform with the real node agent.
export INFERPLANE_ADMIN_KEY=ipk-device-operator-0123456789abcdef
export INFERPLANE_URL=http://127.0.0.1:8080 INFERPLANE_API_KEY=$INFERPLANE_ADMIN_KEY
inferplane up --agent nvidia --gpu-sharing 2 --node-name h100 --no-demo --port 8080 --state-dir /tmp/st \
  --log-level info --json > /tmp/up.json 2> /tmp/up.err &
UP=$!
for i in $(seq 100); do [ -s /tmp/up.json ] && break; sleep 0.2; done
cat /tmp/up.json /tmp/up.err
inferplane tenant create bench > /dev/null
KEY=$(inferplane key create --tenant bench --description device --json | node -e \
  "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>console.log(JSON.parse(s).key))")
log "register"
inferplane model register rand-7b --version 1 --uri /tmp/m/rand-7b.gguf --tenant bench \
  --source 'inferplane model synth (random)' --json > $R/register.json 2> /tmp/register.err ||
  { tail /tmp/register.err; exit 1; }

wait_ready() { # deployment, replicas, timeout s
  for i in $(seq $(($3 * 2))); do
    n=$(inferplane describe deployment "$1" --json 2>/dev/null | node -e \
      "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{try{const d=JSON.parse(s);console.log((d.replicas||[]).filter(r=>r.state==='ready').length)}catch{console.log(0)}})")
    [ "$n" -ge "$2" ] && return 0
    sleep 0.5
  done
  return 1
}
replica_ports() {
  inferplane describe deployment "$1" --json | node -e \
    "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{const d=JSON.parse(s);console.log((d.replicas||[]).filter(r=>r.state==='ready').map(r=>r.port).join(' '))})"
}
bench() { # name, url, key|-, extra args...
  local name=$1 url=$2 key=$3
  shift 3
  local k=()
  [ "$key" != - ] && k=(--api-key "$key")
  timeout 240 inferplane bench --url "$url" "${k[@]}" --model "$MODEL" --endpoint completions \
    --artifacts-dir "$R/$name" --progress-interval 1000 "$@" > "$R/$name.txt" 2>&1
  local rc=$?
  log "bench $name rc=$rc"
  grep -E '^(Time to First Token|Inter Token Latency|Output Token Throughput \(tokens)' "$R/$name.txt" | head -3
}

if [[ $PHASES == *direct-gateway* ]]; then
  MODEL=rand-7b-48
  cat > /tmp/d1.yaml <<EOF
name: rand-7b-48
tenant: bench
model: rand-7b
engine: { name: llamacpp, args: { ctxSize: 98304, parallel: 48, gpuLayers: 99, cacheRam: 0 } }
modelVersion: { name: rand-7b, version: '1' }
replicas: 1
resources: { gpus: 2, gpuType: H100-80GB }
EOF
  inferplane apply -f /tmp/d1.yaml > /dev/null
  log "deploy (1 replica, 48 slots, ctx 98304)"
  wait_ready rand-7b-48 1 240 || { log "not ready"; inferplane describe deployment rand-7b-48; exit 1; }
  log "ready"
  inferplane describe deployment rand-7b-48 > $R/describe-deployment-48.txt
  PORT=$(replica_ports rand-7b-48)
  DIRECT=http://127.0.0.1:$PORT
  GW=http://127.0.0.1:8080
  # A seed of its own for every run: llama-server keeps each slot's last prompt, so a run that
  # repeated the prompts of the run before it would find them cached (seen in the first attempt:
  # the gateway's c=1 TTFT was 16 ms after the direct run's 60 ms on the same prompts).
  for c in 1 16 48; do
    n=N$c
    w=$((c < 4 ? 2 : c))
    COMMON=(--isl 1000 --osl 128 --concurrency $c --request-count ${!n} --warmup-requests $w)
    bench direct-c$c "$DIRECT" - "${COMMON[@]}" --seed $((1000 * c + 1))
    bench gateway-c$c "$GW" "$KEY" "${COMMON[@]}" --seed $((1000 * c + 2))
  done
  # GPU telemetry while the GPU is busy: a c=48 run in the background.
  if [[ $PHASES == *telemetry* ]]; then
    inferplane bench --url "$DIRECT" --model "$MODEL" --endpoint completions --isl 1000 --osl 128 \
      --concurrency 48 --request-count 96 --no-report --artifacts-dir /tmp/busy > /dev/null 2>&1 &
    B=$!
    sleep 6
    curl -s http://127.0.0.1:8080/metrics > $R/metrics-busy.prom
    inferplane describe node h100 > $R/describe-node-busy.txt 2>&1
    inferplane describe node h100 --json > $R/describe-node-busy.json 2>&1
    nvidia-smi --query-gpu=index,uuid,name,pci.bus_id,driver_version,memory.total,memory.used,utilization.gpu,temperature.gpu,power.draw,power.limit,ecc.errors.corrected.aggregate.total,ecc.errors.uncorrected.aggregate.total,clocks_event_reasons.active,compute_cap \
      --format=csv,noheader,nounits > $R/query-gpu-busy.csv
    wait $B
    grep -E '^inferplane_gpu' $R/metrics-busy.prom
    cat $R/describe-node-busy.txt
  fi
  # The shared-prefix reference row (1,500 shared + 100 unique, c=16).
  [ "${PREFIX_ROW:-1}" = 1 ] && bench direct-prefix-c16 "$DIRECT" - --isl 100 --osl 128 --prefix-groups 1 --prefix-length 1500 \
    --seed 11 --concurrency 16 --request-count 64 --warmup-requests 16
  [ "${PREFIX_ROW:-1}" = 1 ] && bench gateway-prefix-c16 "$GW" "$KEY" --isl 100 --osl 128 --prefix-groups 1 --prefix-length 1500 \
    --seed 11 --concurrency 16 --request-count 64 --warmup-requests 16
  curl -s "$DIRECT/metrics" > $R/llamacpp-metrics-48.prom
  inferplane delete deployment rand-7b-48 > /dev/null
  for i in $(seq 60); do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | awk '{exit !($1 < 2000)}' && break; sleep 0.5; done
  log "phase 1 done"
fi

if [[ $PHASES == *replicas* ]]; then
  MODEL=rand-7b-x2
  # Two replicas on the one GPU (each a slot of the GPU shared 2 ways), 16 slots of 2,048 tokens.
  spec() { cat <<EOF
name: rand-7b-x2
tenant: bench
model: rand-7b
engine: { name: llamacpp, args: { ctxSize: 32768, parallel: 16, gpuLayers: 99, cacheRam: 0 } }
modelVersion: { name: rand-7b, version: '1' }
replicas: 2
resources: { gpus: 1, gpuType: H100-80GB }
routing: { policy: $1 }
EOF
  }
  spec round-robin > /tmp/d2.yaml
  inferplane apply -f /tmp/d2.yaml > /dev/null
  log "deploy 2 replicas on one GPU"
  wait_ready rand-7b-x2 2 240 || { log "not ready"; inferplane describe deployment rand-7b-x2; exit 1; }
  inferplane describe deployment rand-7b-x2 > $R/describe-deployment-x2.txt
  inferplane describe node h100 > $R/describe-node-x2.txt 2>&1
  PORTS=$(replica_ports rand-7b-x2)
  log "ready: ports $PORTS"
  scrape() { for p in $PORTS; do curl -s "http://127.0.0.1:$p/metrics" | grep -E '^llamacpp:prompt_tokens(_cached)?_total' | sed "s/^/$p /"; done; }
  round=0
  for policy in round-robin prefix-aware round-robin prefix-aware; do
    round=$((round + 1))
    spec $policy > /tmp/d2.yaml
    inferplane apply -f /tmp/d2.yaml > /dev/null
    sleep 2
    scrape > $R/routing-$round-$policy.before
    # 31 prefix groups of 1,500 tokens (odd, so round-robin does not send a group to one replica
    # by accident), 100-token questions, 64 output tokens, 16 concurrent; a new seed each run, so
    # no run starts from the prefixes an earlier one cached. 16 slots per replica hold 16 prefixes.
    bench routing-$round-$policy http://127.0.0.1:8080 "$KEY" --isl 100 --osl 64 \
      --prefix-groups 31 --prefix-length 1500 --seed $((100 + round)) --concurrency 16 \
      --request-count 256 --warmup-requests 0 --no-metrics
    scrape > $R/routing-$round-$policy.after
    cat $R/routing-$round-$policy.after
  done
  curl -s http://127.0.0.1:8080/metrics | grep -E '^inferplane_(gpu|routing|replica)' > $R/metrics-x2.prom
fi
kill $UP 2>/dev/null
wait $UP 2>/dev/null
log "total"
