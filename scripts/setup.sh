#!/usr/bin/env bash
# Installs everything gankit needs on a fresh Debian/Ubuntu machine, into ./.venv. Idempotent: a second
# run reuses what is there. `--test` also installs the test tools (pytest, headless Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."

with_tests=0
[ "${1:-}" = "--test" ] && with_tests=1

sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_packages=()
[ -d /usr/share/datasets/fashion-mnist ] || apt_packages+=(dataset-fashion-mnist)
python3 -c "import venv, ensurepip" 2>/dev/null || apt_packages+=(python3-venv)
if [ "$with_tests" = 1 ] && ! command -v chromium >/dev/null; then apt_packages+=(chromium); fi
if [ "${#apt_packages[@]}" -gt 0 ]; then
  echo "setup: apt-get install ${apt_packages[*]}"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
# torch first, pinned: the project's own dependencies accept any recent torch.
# (Looked up, not imported: importing them takes seconds, and the first command imports them anyway.)
has_torch='import importlib.util as u, sys; sys.exit(not (u.find_spec("torch") and u.find_spec("torchvision")))'
.venv/bin/python -c "$has_torch" 2>/dev/null || pip install torch==2.14.1 torchvision==0.29.1
# gankit itself, editable: reinstalled only when pyproject.toml changed since the last install of this kind
# (a test install serves both), since pip takes ~15 s to find that nothing needs doing.
stamp=.venv/.gankit-installed
project_hash=$(sha256sum pyproject.toml | cut -d' ' -f1)
installed() { [ -f "$stamp" ] && grep -qxF "$project_hash $1" "$stamp" && .venv/bin/python -c "import gankit" 2>/dev/null; }
if [ "$with_tests" = 1 ]; then
  installed test || { pip install -e ".[test]" && echo "$project_hash test" >>"$stamp"; }
else
  installed test || installed plain || { pip install -e . && echo "$project_hash plain" >>"$stamp"; }
fi
echo "setup: done ($(.venv/bin/python -c 'from importlib.metadata import version; print("torch", version("torch"))'))"
