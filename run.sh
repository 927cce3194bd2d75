#!/usr/bin/env bash
# One entry point for a fresh machine:
#   ./run.sh demo   set up, export the models, run the demo on the embedded broker
#   ./run.sh test   set up, lint, type-check and run the tests
#   ./run.sh setup  only create .venv and install
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3}
VENV=.venv

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        echo "creating $VENV ..."
        "$PY" -m venv "$VENV"
    fi
    # torch is pinned to 2.13.0 in the export extra: pip takes the CPU wheel, not a CUDA build.
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[export,dev,eval]'
}

case "${1:-help}" in
    setup)
        setup
        ;;
    demo)
        setup
        shift
        exec "$VENV/bin/streamrec" demo "$@"
        ;;
    test)
        setup
        shift
        "$VENV/bin/ruff" check .
        "$VENV/bin/mypy"
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    *)
        sed -n '2,5p' "$0"
        exit 2
        ;;
esac
