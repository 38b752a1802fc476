#!/usr/bin/env bash
# Device call 1 (one H100): captures nvidia-smi's output for the agent's parser fixtures, then
# builds llama-server with CUDA for sm_90 through our own installer:
#   inferplane engine install llamacpp --cuda --cuda-arch 90 --source-dir <carried source>
# and writes the cache folder (build + current.json) to $OUT/llamacpp-cuda.tar.xz, which later
# calls carry as .device/llamacpp-cuda.tar.xz (setup.sh unpacks it into INFERPLANE_CACHE_DIR).
# How it was run (device tool, from the repo root, after scripts/device/pack.sh):
#   run(command="bash scripts/device/build-llamacpp-cuda.sh", carry=[".device", ".device-build"],
#       timeout_s=600)
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
source scripts/device/setup.sh
t0=$(date +%s)

# 1. nvidia-smi captures (fixtures for test/unit/agent-nvidia-smi.test.ts).
cap=/tmp/captures && mkdir -p $cap
Q=index,uuid,name,pci.bus_id,driver_version,memory.total,memory.used,utilization.gpu,temperature.gpu,power.draw,power.limit,ecc.errors.corrected.aggregate.total,ecc.errors.uncorrected.aggregate.total,clocks_event_reasons.active,compute_cap
nvidia-smi --query-gpu=$Q --format=csv,noheader,nounits > $cap/query-gpu.csv 2>&1
nvidia-smi --query-gpu=$Q --format=csv > $cap/query-gpu-header.csv 2>&1
nvidia-smi topo -m > $cap/topo-m.txt 2>&1
nvidia-smi -q > $cap/q.txt 2>&1
nvidia-smi > $cap/nvidia-smi.txt 2>&1
(dmesg 2>&1 | grep -i -E 'xid|nvrm' | tail -50) > $cap/dmesg-xid.txt 2>&1
{ nvcc --version; cmake --version | head -1; ninja --version; gcc --version | head -1;
  ldd --version | head -1; cat /etc/os-release | head -2; nproc; free -g | head -2; df -h /tmp | tail -1;
  node --version; uname -a; } > $cap/env.txt 2>&1
cat $cap/query-gpu.csv $cap/topo-m.txt $cap/env.txt
tar -C $cap -cf "$OUT/captures.tar" .

# 2. The app runs here (Node carried; better-sqlite3's addon loads on this glibc).
node -e "const D=require('/tmp/ip/app/node_modules/better-sqlite3'); const d=new D(':memory:'); console.log('sqlite', d.prepare('select sqlite_version() v').get().v)"
inferplane --version

# 3. The build.
mkdir -p /tmp/llama-src && xz -dc .device-build/llama-src.tar.xz | tar -C /tmp/llama-src -xf -
cat /tmp/llama-src/llama.cpp.info.json
inferplane engine install llamacpp --cuda --cuda-arch 90 --source-dir /tmp/llama-src --json \
  2> >(tee /tmp/build.log | grep -v -E 'building llama-server: [0-9]+%' >&2)
rc=$?
tail -5 /tmp/build.log
echo "build rc=$rc after $(( $(date +%s) - t0 )) s"
dir=$INFERPLANE_CACHE_DIR/engines/llamacpp
ls -la $dir $dir/*/bin 2>&1
[ $rc -eq 0 ] || exit $rc
# Stripped, and in parts under the 16 MiB a returned file may have (cat them into
# .device/llamacpp-cuda.tar.xz here; `xz --x86 --lzma2=preset=9e` there saves another 1%).
strip $dir/*/bin/llama-server
tar -C $dir -cf - --exclude='*.lock' --exclude='tmp-*' . | xz -T16 -9e > /tmp/llamacpp-cuda.tar.xz
split -b 15M -d /tmp/llamacpp-cuda.tar.xz "$OUT/llamacpp-cuda.tar.xz.part"
ls -la "$OUT"
ldd $dir/*/bin/llama-server

# 4. Smoke test on the GPU: a tiny random model, all layers offloaded, one completion.
inferplane model synth --hidden 256 --layers 2 --heads 4 --ffn 512 --vocab 512 --out /tmp/tiny.gguf >/dev/null
srv=$(ls $dir/*/bin/llama-server)
$srv -m /tmp/tiny.gguf -ngl 99 --port 18555 -c 1024 --metrics > /tmp/srv.log 2>&1 &
pid=$!
for i in $(seq 60); do curl -sf localhost:18555/health >/dev/null && break; sleep 0.5; done
curl -s localhost:18555/v1/completions -H 'content-type: application/json' \
  -d '{"prompt":"hello","max_tokens":8}' | head -c 400; echo
grep -E 'CUDA|offload|ggml_cuda|build' /tmp/srv.log | head -12
kill $pid
echo "total $(( $(date +%s) - t0 )) s"
