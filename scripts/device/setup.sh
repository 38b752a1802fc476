# Sourced on the device machine: unpacks the carried Node and app into /tmp/ip and puts them on
# PATH (`inferplane` runs the packed CLI). Idempotent.
set -e
IP=/tmp/ip
if [ ! -x $IP/bin/node ]; then
  mkdir -p $IP/bin $IP/app
  xz -dc .device/node.xz > $IP/bin/node && chmod +x $IP/bin/node
  xz -dc .device/app.tar.xz | tar -C $IP/app -xf -
  printf '#!/bin/sh\nexec %s/bin/node %s/app/bin/inferplane.js "$@"\n' $IP $IP > $IP/bin/inferplane
  chmod +x $IP/bin/inferplane
fi
export PATH=$IP/bin:$PATH
export INFERPLANE_CACHE_DIR=${INFERPLANE_CACHE_DIR:-$IP/cache}
# A llama-server build brought back from an earlier call (scripts/device/build-llamacpp-cuda.sh).
if [ -s .device/llamacpp-cuda.tar.xz ] && [ ! -e $INFERPLANE_CACHE_DIR/engines/llamacpp/current.json ]; then
  mkdir -p $INFERPLANE_CACHE_DIR/engines/llamacpp
  xz -dc .device/llamacpp-cuda.tar.xz | tar -C $INFERPLANE_CACHE_DIR/engines/llamacpp -xf -
fi
set +e
