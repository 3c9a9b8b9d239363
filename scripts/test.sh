#!/usr/bin/env bash
# Set-up with the test tools, then the default (fast) test suite. Extra arguments go to pytest
# (e.g. `-m slow` for the long runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
exec .venv/bin/python -m pytest -q "$@"
