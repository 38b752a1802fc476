#!/usr/bin/env bash
# Packs what the device machine needs (git-ignored folders, carried by the device tool):
#   .device/node.xz            this machine's Node binary, stripped (the device has no Node)
#   .device/app.tar.xz         the CLI as one esbuild bundle (dist/cli/main.js), package.json and
#                              better-sqlite3 (the only native addon) with its two helpers
#   .device-build/llama-src.tar.xz  the llama.cpp source node-llama-cpp ships (its git bundle,
#                              checked out; docs/, models/, benches/ left out) with
#                              llama.cpp.info.json {tag, commit}: only the build call carries it
# The build call brings back .device/llamacpp-cuda.tar.xz. Everything carried (plus the working
# tree) must stay under 64 MiB: node ~21 MB, llama-server (CUDA, sm_90) ~42 MB, app ~1.5 MB.
# Run from the repo root after `npx tsc -p tsconfig.build.json`. Needs network for `npm pack` /
# `npm ci` (the npm cache answers when warm).
set -euo pipefail
root=$(pwd)
dev=$root/.device
work=${TMPDIR:-/tmp}/inferplane-device-pack
mkdir -p "$dev" "$work" "$root/.device-build"

if [ ! -s "$dev/node.xz" ]; then
  strip -o "$work/node" "$(command -v node)"
  xz -T1 --x86 --lzma2=preset=9e -c "$work/node" > "$dev/node.xz" # BCJ filter: ~4% smaller
fi

# Production dependencies only, for better-sqlite3 (external to the bundle; its compiled addon is
# copied from node_modules: the glibc it was built on must not be newer than the device's).
rm -rf "$work/prod" "$work/app" && mkdir -p "$work/prod" "$work/app/node_modules" "$work/app/dist/cli"
cp package.json package-lock.json "$work/prod/"
(cd "$work/prod" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error)
for m in better-sqlite3 bindings file-uri-to-path; do
  cp -r "$work/prod/node_modules/$m" "$work/app/node_modules/"
done
rm -rf "$work/app/node_modules/better-sqlite3/deps" "$work/app/node_modules/better-sqlite3/src"
mkdir -p "$work/app/node_modules/better-sqlite3/build/Release"
cp node_modules/better-sqlite3/build/Release/better_sqlite3.node \
  "$work/app/node_modules/better-sqlite3/build/Release/"
npx esbuild dist/cli/main.js --bundle --minify --platform=node --format=esm --target=node20 \
  --external:better-sqlite3 --outfile="$work/app/dist/cli/main.js" --log-level=warning \
  --banner:js="import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);"
mkdir -p "$work/app/bin" && cp bin/inferplane.js "$work/app/bin/" && cp package.json "$work/app/"
tar -C "$work/app" -cf - . | xz -T2 -9 > "$dev/app.tar.xz"

if [ ! -s "$root/.device-build/llama-src.tar.xz" ]; then
  spec=$(node -e "import('./dist/engines/install.js').then(m => console.log(m.NODE_LLAMA_CPP_PACKAGE))")
  rm -rf "$work/nlc" && mkdir -p "$work/nlc"
  (cd "$work/nlc" && npm pack "$spec" --loglevel=error >/dev/null && tar xzf ./*.tgz \
    package/llama/gitRelease.bundle package/llama/llama.cpp.info.json &&
    git clone -q package/llama/gitRelease.bundle src)
  tag=$(node -e "console.log(JSON.parse(require('fs').readFileSync('$work/nlc/package/llama/llama.cpp.info.json','utf8')).tag)")
  commit=$(git -C "$work/nlc/src" rev-parse HEAD)
  mkdir -p "$work/nlc/extra"
  printf '{"tag": "%s", "commit": "%s", "source": "%s"}\n' "$tag" "$commit" "$spec" \
    > "$work/nlc/extra/llama.cpp.info.json"
  (cd "$work/nlc/src" && git archive --format=tar HEAD -- . ':!models' ':!docs' ':!benches' ':!.github') \
    > "$work/nlc/src.tar"
  tar -C "$work/nlc/extra" -rf "$work/nlc/src.tar" llama.cpp.info.json
  xz -T2 -6 -c "$work/nlc/src.tar" > "$root/.device-build/llama-src.tar.xz"
fi
ls -la "$dev" "$root/.device-build"
tree=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
echo "carried .device: $(du -cb "$dev"/* | tail -1 | cut -f1) bytes; working tree: $tree bytes; limit $((64 << 20))"
