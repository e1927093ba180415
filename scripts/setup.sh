#!/usr/bin/env bash
# Installs what reals needs on Debian 12 and builds the libtorch addon. Safe to run again: each
# step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(libtorch-dev libgloo-dev libopenblas0-pthread dataset-fashion-mnist chromium)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci"
  # onnxruntime-node (the ONNX tests' runtime) ships its CPU build in the npm package; its install
  # script would download more from outside the registry. npm 11 does not run it unless approved;
  # older npm reads this setting (the --onnxruntime-node-install=skip flag) and skips it.
  npm_config_onnxruntime_node_install=skip npm ci --no-audit --no-fund
fi

npm run --silent build:native
