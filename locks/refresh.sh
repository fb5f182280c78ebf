#!/usr/bin/env bash
# Regenerates the lock that ./launch.sh installs (exact versions with sha256 hashes, Python 3.11 on Linux x86_64):
#   locks/refresh.sh                         after a change to pyproject.toml: re-lock, keeping every pin that still fits
#   locks/refresh.sh --upgrade               move every package to the newest version pyproject.toml's ranges allow
#   locks/refresh.sh --upgrade-package flax  move one package (and what it needs)
# Needs uv (pip install uv). torch is PyTorch's CPU build (2.13.0+cpu), which PyPI does not carry: uv takes it from
# $TORCH_CPU_WHEELS, by default /opt/wheels where that folder exists, else PyTorch's CPU wheel page.
# After an upgrade, check the numbers the README and experiments/expected.toml quote (cnn-jax reproduce) before committing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
wheels="${TORCH_CPU_WHEELS:-}"
if [ -z "$wheels" ]; then
  wheels=/opt/wheels
  [ -d "$wheels" ] || wheels="https://download.pytorch.org/whl/cpu/torch/"
fi
if command -v uv >/dev/null; then
  uv=(uv)
elif python3 -c 'import uv' 2>/dev/null; then
  uv=(python3 -m uv)
else
  echo "locks/refresh.sh needs uv: pip install uv" >&2
  exit 1
fi
exec "${uv[@]}" pip compile pyproject.toml --extra test --extra build --generate-hashes --python-version 3.11 \
  --python-platform x86_64-manylinux_2_28 --find-links "$wheels" --custom-compile-command "locks/refresh.sh [--upgrade]" \
  -o locks/py3.11-linux-x86_64.txt "$@"
