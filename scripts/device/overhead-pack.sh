#!/usr/bin/env bash
# Packs what bench/gateway-overhead.mjs needs on the lent device machine (16 cores; no Node,
# nginx or wrk there, and nothing can be fetched) into git-ignored files the device tool carries:
#   .device/node.xz          this machine's Node binary, stripped (shared with pack.sh)
#   .device/overhead.tar.xz  bin/nginx and bin/wrk (Debian's) with the libraries they link beyond
#                            glibc in lib/, bin/openloop-<hash> (bench/lib/openloop.c, built here),
#                            dist/ (the built gateway) and node_modules/ (production dependencies,
#                            better-sqlite3 left out: the gateway bench does not load it)
# Then, on the device: `bash scripts/device/overhead.sh` (carry [".device"]).
# Run from the repo root after `npx tsc -p tsconfig.build.json`; needs nginx-light and wrk here
# (apt-get install -y nginx-light wrk) and the npm cache or registry for `npm ci`.
set -euo pipefail
root=$(pwd)
dev=$root/.device
work=${TMPDIR:-/tmp}/inferplane-overhead-pack
rm -rf "$work" && mkdir -p "$dev" "$work/pack/bin" "$work/pack/lib" "$work/prod"

if [ ! -s "$dev/node.xz" ]; then
  strip -o "$work/node" "$(command -v node)"
  xz -T1 --x86 --lzma2=preset=9e -c "$work/node" > "$dev/node.xz"
fi

nginx=$(command -v nginx || echo /usr/sbin/nginx)
wrk=$(command -v wrk || true)
if [ ! -x "$nginx" ] || [ -z "$wrk" ]; then
  echo "overhead-pack: needs nginx and wrk here: apt-get install -y nginx-light wrk" >&2
  exit 2
fi
cp "$nginx" "$wrk" "$work/pack/bin/"
# Their libraries, except glibc's own (the device's glibc is newer: 2.39 against Debian 12's 2.36).
ldd "$nginx" "$wrk" | awk '/=> \// {print $3}' | sort -u | while read -r lib; do
  case $(basename "$lib") in
    libc.so.* | libm.so.* | libpthread.so.* | libdl.so.* | librt.so.* | ld-linux*) ;;
    *) cp -L "$lib" "$work/pack/lib/" ;;
  esac
done

# The open-loop generator, built as the bench builds it (its name carries the source's hash).
gen=$(node --input-type=module -e "import('$root/bench/lib/openloop.mjs').then((m) => console.log(m.cGenerator() ?? ''))")
if [ -z "$gen" ]; then
  echo "overhead-pack: could not build bench/lib/openloop.c (no C compiler?)" >&2
  exit 2
fi
cp "$gen" "$work/pack/bin/"

cp -r dist "$work/pack/dist"
cp package.json package-lock.json "$work/prod/"
(cd "$work/prod" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error)
rm -rf "$work/prod/node_modules/better-sqlite3"
mv "$work/prod/node_modules" "$work/pack/node_modules"

tar -C "$work/pack" -cf - . | xz -T2 -9 > "$dev/overhead.tar.xz"
ls -la "$dev"
tree=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
echo "carried .device: $(du -cb "$dev"/* | tail -1 | cut -f1) bytes; working tree: $tree bytes; limit $((64 << 20))"
