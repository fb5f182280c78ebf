#!/usr/bin/env bash
# cnn_jax launcher: sets up .venv on first use (the exact versions of locks/, see ensure_env), then runs.
#   ./launch.sh [opts]                        the main job: the pool_vs_stride ablation (cpu preset), then its report
#   ./launch.sh EXPERIMENT [PRESET] [opts]    run an experiment file: its sweep (skips finished runs, resumes
#                                             interrupted ones), or its single config if it declares no sweep;
#                                             opts: --jobs N, --backend slurm --partition P --gpus G ..., --dry-run
#   ./launch.sh status EXPERIMENT [PRESET]    done / running / failed / pending per run
#   ./launch.sh report runs/EXPERIMENT        tables, statistics and plots of a sweep
#   ./launch.sh test [pytest args]            lint and format check (ruff), then the test suite on every core;
#                                             ./launch.sh test -m "not slow" is the fast tier
#   ./launch.sh docs                          the Python API reference, built into docs/api/ (pdoc)
#   ./launch.sh format                        apply ruff's formatting and safe lint fixes
#   ./launch.sh cnn-jax ARGS...               any cnn-jax command inside the environment
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${CNN_JAX_VENV:-$ROOT/.venv}"
MAIN_JOB=(experiments/pool_vs_stride.py cpu --jobs 2)  # 2 single-run processes use 2 CPU cores best; --jobs N overrides
# Offline copies of the datasets beside the checkout (../shared/data) are found without configuration.
if [ -d "$ROOT/../shared/data" ]; then
  export CNN_JAX_LOCAL_DATA="${CNN_JAX_LOCAL_DATA:+$CNN_JAX_LOCAL_DATA:}$(cd "$ROOT/../shared/data" && pwd)"
fi

# Which lock fits the venv's interpreter: pyX.Y-PLATFORM-MACHINE, the name of a file in locks/.
lock_key() {
  "$VENV/bin/python" -c 'import platform, sys; print(f"py{sys.version_info[0]}.{sys.version_info[1]}-{sys.platform}-{platform.machine()}")'
}

# Installs the lock's exact versions (hash-checked), then cnn_jax itself without dependencies; where no lock fits
# the interpreter, pyproject.toml's ranges, with a warning. Installs again when pyproject.toml, the lock or the
# sources of cnn_jax/kernels change.
ensure_env() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "Creating the virtual environment $VENV" >&2
    python3 -m venv "$VENV"
  fi
  local stamp="$VENV/.cnn_jax_installed" key lock="" source=ranges want
  local pip=("$VENV/bin/pip" install --quiet --disable-pip-version-check)
  key="$(lock_key)"
  if [ -f "$ROOT/locks/$key.txt" ]; then lock="$ROOT/locks/$key.txt" source="locks/$key.txt"; fi
  # the compiled part (cnn_jax/kernels) is rebuilt when its sources change
  want="$(cat "$ROOT/pyproject.toml" ${lock:+"$lock"} "$ROOT"/cnn_jax/kernels/{CMakeLists.txt,*.cc} | sha256sum | cut -d' ' -f1) $source"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return
  fi
  if [ -n "$lock" ]; then
    echo "Installing cnn_jax and the locked dependencies ($source) into $VENV (once)" >&2
    "${pip[@]}" --require-hashes -r "$lock" || {
      echo "error: could not install $source; if pip found no torch 2.13.0+cpu (PyTorch's CPU build), point" \
        "it at PyTorch's CPU wheels: PIP_FIND_LINKS=https://download.pytorch.org/whl/cpu/torch/ $0 ..." >&2
      exit 1
    }
    # the build tools and oneDNN headers come from the lock too (pyproject.toml's "build" extra)
    "${pip[@]}" --no-deps --no-build-isolation -e "$ROOT"
  else
    local covered
    covered="$(cd "$ROOT/locks" 2>/dev/null && ls -- *.txt 2>/dev/null | sed 's/\.txt$//' | paste -sd' ' || true)"
    echo "warning: no lock fits this interpreter ($key; locks/ has: ${covered:-none}); installing pyproject.toml's" \
      "version ranges, so package versions may differ from those the README's numbers were measured with" >&2
    "${pip[@]}" -e "$ROOT[test]"
  fi
  echo "$want" > "$stamp"
}

# Offline machines: if Fashion-MNIST is nowhere to be found, install Debian's copy when we may.
ensure_default_data() {
  if "$VENV/bin/cnn-jax" data locate fashion_mnist >/dev/null 2>&1; then
    return
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "Fashion-MNIST not found; installing Debian's dataset-fashion-mnist" >&2
    if ! apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; then
      apt-get update -qq >/dev/null 2>&1 || true
      apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
        || echo "warning: could not install dataset-fashion-mnist; set CNN_JAX_LOCAL_DATA to a folder holding fashion-mnist/" >&2
    fi
  fi
}

ensure_env
case "${1:-}" in
  test)
    shift
    cd "$ROOT"
    "$VENV/bin/ruff" format --check . >&2 || { echo "ruff format: the files above need formatting (./launch.sh format)" >&2; exit 1; }
    "$VENV/bin/ruff" check --quiet . >&2 || { echo "ruff check: fix the findings above (./launch.sh format fixes some)" >&2; exit 1; }
    # one pytest-xdist worker per core (CNN_JAX_TEST_WORKERS=0: one process); the SLURM tests share a worker
    exec "$VENV/bin/python" -m pytest -n "${CNN_JAX_TEST_WORKERS:-auto}" --dist loadgroup "$@"
    ;;
  docs)
    # the API reference (cnn_jax/api.py's docstrings) as HTML in docs/api/
    cd "$ROOT"
    exec "$VENV/bin/pdoc" cnn_jax.api -o docs/api
    ;;
  format)
    cd "$ROOT"
    "$VENV/bin/ruff" format . && exec "$VENV/bin/ruff" check --fix .
    ;;
  cnn-jax)
    shift
    exec "$VENV/bin/cnn-jax" "$@"
    ;;
  status | report)
    exec "$VENV/bin/cnn-jax" "$@"
    ;;
  "" | -*)
    ensure_default_data
    cd "$ROOT"
    exec "$VENV/bin/cnn-jax" launch "${MAIN_JOB[@]}" "$@"
    ;;
  *)
    exec "$VENV/bin/cnn-jax" launch "$@"
    ;;
esac
