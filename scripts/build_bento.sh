#!/usr/bin/env bash
# Build the customer360 Bento from the repo: the package wheel first (the Bento installs it),
# then `bentoml build`. Usage: scripts/build_bento.sh [--output tag]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
rm -rf dist
"$PY" -m pip wheel --quiet --no-deps --wheel-dir dist .
BENTOML_DO_NOT_TRACK=True "$PY" -m bentoml build . "$@"
