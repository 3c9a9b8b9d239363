#!/usr/bin/env bash
# Set-up, then the main job: the dcgan-fashion-mnist preset into runs/demo. Re-running it continues or,
# when finished, just prints the final sample grid again.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/gankit train dcgan-fashion-mnist --out runs/demo "$@"
