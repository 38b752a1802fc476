#!/usr/bin/env bash
# On the device machine (16 cores): the gateway overhead bench with the proxy under test on a
# core of its own (--pin), what this 2-core workplace cannot give it. Carry [".device"] after
# `bash scripts/device/overhead-pack.sh` here. Arguments go to bench/gateway-overhead.mjs after
# the defaults below (a later option wins); the output is also written to $OUT/overhead.txt.
#   bash scripts/device/overhead.sh                 # --pin --own-rate, 3 rounds × 5 s, c=32,64
#   bash scripts/device/overhead.sh --smoke         # a quick check that everything starts
set -euo pipefail
ov=${OVERHEAD_DIR:-/tmp/ip-overhead}
if [ ! -x "$ov/bin/node" ]; then
  mkdir -p "$ov/bin"
  xz -dc .device/node.xz > "$ov/bin/node.tmp" && chmod +x "$ov/bin/node.tmp" && mv "$ov/bin/node.tmp" "$ov/bin/node"
  xz -dc .device/overhead.tar.xz | tar -C "$ov" -xf -
fi
export PATH=$ov/bin:$PATH
export LD_LIBRARY_PATH=$ov/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# The built gateway and its dependencies where the bench's scripts look for them (the repo root).
[ -e dist ] || ln -s "$ov/dist" dist
[ -e node_modules ] || ln -s "$ov/node_modules" node_modules
# The generator where bench/lib/openloop.mjs keeps it (built here, so no compiler is needed).
gendir=${TMPDIR:-/tmp}/inferplane-openloop
mkdir -p "$gendir"
for g in "$ov"/bin/openloop-*; do
  [ -e "$gendir/$(basename "$g")" ] || cp "$g" "$gendir/"
done

echo "node $(node --version); $(nginx -v 2>&1); $(wrk -v 2>&1 | head -1); $(nproc) CPUs; $(uname -r)"
out=${OUT:-/tmp}/overhead.txt
node bench/gateway-overhead.mjs --pin --own-rate --rounds 3 --duration 5 --connections 32,64 \
  --variant rawfloor=bench/lib/floor-raw-proxy.mjs "$@" 2>&1 | tee "$out"
