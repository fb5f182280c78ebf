#!/usr/bin/env bash
# The GPU check in one command, on a machine whose Python already has JAX with CUDA and PyTorch and that
# has no internet: benchmarks/gpu_check.py (the device-dependent tests, the train-step benchmark against
# PyTorch eager and torch.compile, a fixed-time CIFAR-10 training; one JSON, under 8 minutes on one GPU).
#
#   benchmarks/gpu_check.sh [--wheels DIR] [gpu_check.py options: --data DIR --out FILE --budget S --quick ...]
#       1. creates a virtual environment (default /tmp/cnn_jax_gpu_venv; CNN_JAX_GPU_VENV) with
#          --system-site-packages from $PYTHON (default python3), so the machine's own jax, jaxlib, CUDA
#          plugin and torch are used as they are; when $PYTHON itself runs in a virtual environment (as
#          /opt/torch/.venv on the H200 machines), that environment's site-packages are added too;
#       2. installs the project's dependencies that the machine lacks (any installed version is kept; one
#          outside the project's range is reported) from the wheel folder:
#          pip install --no-index --find-links DIR -r <missing>, then pip install --no-deps -e . (if that
#          cannot build offline, the checkout is put on the path instead);
#       3. runs python benchmarks/gpu_check.py with the other options.
#
#   benchmarks/gpu_check.sh --download-wheels DIR [--python-version 3.12] [--present FILE]
#       on a machine WITH internet: fills DIR with wheels of the project's dependencies (pyproject.toml),
#       minus jax, jaxlib and torch, for CPython 3.12 on x86-64 Linux, their dependencies included:
#         pip wheel --no-deps -w DIR promise     # tensorflow-datasets needs it; PyPI has its source only
#         pip download --python-version 3.12 --only-binary=:all: --platform manylinux_2_17_x86_64 (...2_39)
#             --find-links DIR -d DIR <pyproject dependencies minus jax/jaxlib/torch> pytest
#         rm DIR/jax-* DIR/jaxlib-*              # pulled in by flax/optax/orbax; the GPU machine's own are used
#       --present FILE: distribution names the GPU machine already has (one a line; `python3 -m pip list
#       --format=freeze` there, or a list such as the machine's documented package list): their wheels are
#       left out. Measured 2026-12 for Python 3.12: 76 wheels, 199 MiB; leaving out what the H200 image
#       already has: 17 wheels, 11 MiB (tensorflow-datasets, array_record, grain, ml_collections, ...).
#
# Data: copy the data folder along (it is not in git): fashion-mnist/ (the four IDX .gz files, for the
# tests) and cifar10-jpeg/cifar10-jpeg.tgz (the training), about 50 MB; found as --data DIR, else
# $CNN_JAX_TEST_DATA, ../shared/data beside the checkout, or .gpu_data/ inside it.
#
# Example (a machine with internet prepares, the GPU machine runs):
#   benchmarks/gpu_check.sh --download-wheels .gpu_wheels --present h200_packages.txt
#   cp -r ../shared/data .gpu_data            # both folders: add them to .git/info/exclude
#   ... on the GPU machine, in the checkout:
#   benchmarks/gpu_check.sh --wheels .gpu_wheels     # -> benchmarks/results/gpu_check.json
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="${CNN_JAX_GPU_VENV:-/tmp/cnn_jax_gpu_venv}"
SKIP_NAMES="jax jaxlib torch"  # the GPU machine's own builds are used

die() {
  echo "gpu_check.sh: $*" >&2
  exit 2
}

# The project's dependencies (pyproject.toml) minus jax/jaxlib/torch, plus pytest: one requirement a line.
# With "missing": only those whose distribution is not installed for the running Python.
requirements() {
  "$1" - "$ROOT/pyproject.toml" "$2" "$SKIP_NAMES" <<'EOF'
import importlib.metadata as metadata
import re
import sys

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

path, mode, skip = sys.argv[1], sys.argv[2], set(sys.argv[3].split())
with open(path, "rb") as file:
    dependencies = tomllib.load(file)["project"]["dependencies"] + ["pytest>=8"]
for requirement in dependencies:
    name = re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0]
    if re.sub(r"[-_.]+", "-", name).lower() in skip:
        continue
    if mode == "missing":
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            print(requirement)
            continue
        try:
            from packaging.requirements import Requirement

            if not Requirement(requirement).specifier.contains(version, prereleases=True):
                print(f"note: {name} {version} is installed, outside the project's range {requirement}; "
                      "it is used as it is", file=sys.stderr)
        except ImportError:
            pass
    else:
        print(requirement)
EOF
}

download_wheels() {
  local dir="" pyver="3.12" present=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --python-version) pyver="$2"; shift 2 ;;
      --present) present="$2"; shift 2 ;;
      -*) die "--download-wheels: unknown option $1" ;;
      *) dir="$1"; shift ;;
    esac
  done
  [ -n "$dir" ] || die "--download-wheels needs a folder"
  mkdir -p "$dir"
  local reqs platforms=() n
  reqs="$(mktemp)"
  requirements "$PYTHON" all > "$reqs"
  for n in $(seq 17 39); do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
  "$PYTHON" -m pip wheel --quiet --no-deps -w "$dir" promise
  "$PYTHON" -m pip download --python-version "$pyver" --implementation cp --only-binary=:all: \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 "${platforms[@]}" \
    --find-links "$dir" -d "$dir" -r "$reqs"
  rm -f "$reqs" "$dir"/jax-[0-9]*.whl "$dir"/jaxlib-[0-9]*.whl
  if [ -n "$present" ]; then
    "$PYTHON" - "$dir" "$present" <<'EOF'
import pathlib
import re
import sys

def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()

folder = pathlib.Path(sys.argv[1])
present = set()
for line in pathlib.Path(sys.argv[2]).read_text().replace(",", "\n").splitlines():
    name = re.split(r"[<>=!~ @]", line.strip(), maxsplit=1)[0]
    if name and not name.startswith("#"):
        present.add(norm(name))
for wheel in folder.glob("*.whl"):
    if norm(wheel.name.split("-")[0]) in present:
        wheel.unlink()
EOF
  fi
  echo "wheels in $dir: $(ls "$dir"/*.whl | wc -l) files, $(du -sh "$dir" | cut -f1)"
}

if [ "${1:-}" = "--download-wheels" ]; then
  shift
  download_wheels "$@"
  exit 0
fi
if [ "${1:-}" = "--requirements" ]; then  # what --download-wheels fetches (for checks)
  requirements "$PYTHON" all
  exit 0
fi

WHEELS=""
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) WHEELS="$2"; shift 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done

start=$(date +%s)
stamp="$VENV/.cnn_jax_gpu_check"
want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1) $("$PYTHON" -c 'import sys; print(sys.executable)')"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  rm -rf "$VENV"
  # no pip or setuptools of the environment's own: an old bundled setuptools would shadow the machine's
  "$PYTHON" -m venv --system-site-packages --without-pip "$VENV" || die "could not create $VENV"
  own="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  # $PYTHON in a virtual environment: --system-site-packages reaches only its base Python, so add its own
  # site-packages (after the new environment's, whose packages win)
  parent="$("$PYTHON" -c 'import site, sys; print(":".join(site.getsitepackages()) if sys.prefix != sys.base_prefix else "")')"
  if [ -n "$parent" ]; then
    echo "import site; list(map(site.addsitedir, '$parent'.split(':')))" > "$own/_cnn_jax_parent_env.pth"
  fi
  if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    "$VENV/bin/python" -m ensurepip --default-pip >/dev/null || die "no pip for $VENV (and ensurepip failed)"
  fi
  missing="$VENV/missing-requirements.txt"
  requirements "$VENV/bin/python" missing > "$missing"
  if [ -s "$missing" ]; then
    [ -n "$WHEELS" ] || die "missing on this machine, and no --wheels folder given: $(tr '\n' ' ' < "$missing")"
    [ -d "$WHEELS" ] || die "--wheels $WHEELS: no such folder"
    echo "installing from $WHEELS: $(tr '\n' ' ' < "$missing")" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-index --find-links "$WHEELS" -r "$missing"
  fi
  if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-index --no-deps \
    --no-build-isolation -e "$ROOT" 2> "$VENV/editable-install.log"; then
    # the checkout on the path is all the check needs (it calls cnn_jax's CLI through python -c)
    echo "note: pip install --no-deps -e . failed ($(tail -n 1 "$VENV/editable-install.log")); putting the checkout on the path instead" >&2
    echo "$ROOT" > "$own/_cnn_jax_checkout.pth"
  fi
  echo "$want" > "$stamp"
fi
cd "$ROOT"
exec "$VENV/bin/python" benchmarks/gpu_check.py --setup-s "$(($(date +%s) - start))" ${ARGS[@]+"${ARGS[@]}"}
