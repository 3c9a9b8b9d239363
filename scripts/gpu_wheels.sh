#!/usr/bin/env bash
# Downloads, on a machine with the package registries, the wheels that scripts/gpu_check.sh installs on an
# offline GPU machine: gankit's dependencies, its test extras and its build backend, for that machine's
# Python and Linux x86-64, everything but torch and torchvision (the GPU machine's own are used).
#
#   bash scripts/gpu_wheels.sh DIR [--python-version 3.12] [--glibc 2.28] [--skip numpy,pillow]
#
# --python-version: the GPU machine's Python (default 3.12, the lent H200's). --glibc: the newest manylinux
# glibc its wheels may need (default 2.28: Debian 10, Ubuntu 18.10, RHEL 8 and later). --skip: distributions
# left out because that machine has them anyway; the default leaves out numpy and pillow (torchvision
# requires both, so a machine with a working torchvision has them): 38 MiB instead of 60, which leaves
# room in a 64 MiB transfer. `--skip ''` downloads everything.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: bash scripts/gpu_wheels.sh DIR [--python-version X.Y] [--glibc 2.N] [--skip NAME,...]" >&2; exit 2; }
[ $# -ge 1 ] || usage
dest=$1
shift
python_version=3.12
glibc=2.28
skip=numpy,pillow
while [ $# -gt 0 ]; do
  case $1 in
    --python-version) [ $# -ge 2 ] || usage; python_version=$2; shift 2 ;;
    --glibc) [ $# -ge 2 ] || usage; glibc=$2; shift 2 ;;
    --skip) [ $# -ge 2 ] || usage; skip=$2; shift 2 ;;
    *) usage ;;
  esac
done
[[ $python_version =~ ^3\.[0-9]+$ ]] || { echo "gpu_wheels: --python-version $python_version: give MAJOR.MINOR, e.g. 3.12" >&2; exit 2; }
[[ $glibc =~ ^2\.([0-9]+)$ ]] || { echo "gpu_wheels: --glibc $glibc: give 2.N, e.g. 2.28" >&2; exit 2; }
glibc_minor=${BASH_REMATCH[1]}
[ "$glibc_minor" -ge 17 ] || { echo "gpu_wheels: --glibc $glibc: manylinux wheels need 2.17 or later" >&2; exit 2; }

# The project's own environment has pip; a bare python3 may not.
python=python3
[ -x .venv/bin/python ] && python=.venv/bin/python
"$python" -m pip --version >/dev/null 2>&1 || { echo "gpu_wheels: $python has no pip (python3 -m ensurepip, or run scripts/setup.sh)" >&2; exit 2; }

# pip matches manylinux tags exactly: name every glibc from 2.17 up to --glibc, and the legacy aliases.
platforms=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
for ((minor = 17; minor <= glibc_minor; minor++)); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
abi=cp${python_version/./}
target=(--only-binary=:all: --python-version "$python_version" --implementation cp --abi "$abi" "${platforms[@]}")
pip_download() { "$python" -m pip --disable-pip-version-check download -q "${target[@]}" "$@"; }

mkdir -p "$dest"
staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT

# The requirements: pyproject.toml's dependencies, test extras and build backend, minus torch, torchvision
# and --skip (names compared as pip does: case, '-', '_' and '.' alike).
"$python" - "$skip" >"$staging/roots.txt" <<'PY'
import re, sys
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    from pip._vendor import tomli as tomllib

def name(requirement):
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement).group(0)).lower()

project = tomllib.load(open("pyproject.toml", "rb"))
left_out = {"torch", "torchvision"} | {name(s) for s in sys.argv[1].split(",") if s.strip()}
wanted = (project["project"]["dependencies"] + project["project"]["optional-dependencies"]["test"]
          + project["build-system"]["requires"])
print("\n".join(r for r in wanted if name(r) not in left_out))
PY

# A requirement that itself requires torch (torch-fidelity) comes without its dependencies, and its
# other requirements join the list: otherwise pip would download torch and its CUDA libraries (GBs).
mapfile -t roots <"$staging/roots.txt"
pip_download --no-deps -d "$staging/probe" "${roots[@]}"
"$python" - "$staging/probe" "$skip" >"$staging/split.txt" <<'PY'
import re, sys, zipfile
from pathlib import Path

def name(requirement):
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement).group(0)).lower()

left_out = {name(s) for s in sys.argv[2].split(",") if s.strip()}
for wheel in sorted(Path(sys.argv[1]).glob("*.whl")):
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        lines = archive.read(metadata).decode().splitlines()
    requires = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Requires-Dist:")]
    requires = [r for r in requires if "extra ==" not in r]  # optional extras are not installed
    if {"torch", "torchvision"} & {name(r) for r in requires}:
        print(f"whole\t{wheel}")
        for r in requires:
            if name(r) not in {"torch", "torchvision"} | left_out:
                print(f"root\t{r}")
PY
torch_dependent=()
while IFS=$'\t' read -r kind value; do
  if [ "$kind" = whole ]; then
    torch_dependent+=("$value")
  else
    roots+=("$value")
  fi
done <"$staging/split.txt"
for wheel in "${torch_dependent[@]}"; do
  dependent=$(basename "$wheel" | cut -d- -f1)
  mapfile -t roots < <(printf '%s\n' "${roots[@]}" | grep -viE "^${dependent//_/[-_.]}([^A-Za-z0-9._-]|$)")
  cp "$wheel" "$dest/"
done

pip_download -d "$dest" "${roots[@]}"

# Dependencies of the others that --skip names (matplotlib needs numpy and pillow, say) are removed too.
"$python" - "$dest" "$skip" <<'PY'
import re, sys
from pathlib import Path

left_out = {re.sub(r"[-_.]+", "-", s.strip()).lower() for s in sys.argv[2].split(",") if s.strip()}
for wheel in Path(sys.argv[1]).glob("*.whl"):
    if re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower() in left_out | {"torch", "torchvision"}:
        wheel.unlink()
PY

count=$(find "$dest" -maxdepth 1 -name '*.whl' | wc -l)
size_kib=$(du -sk "$dest" | cut -f1)
echo "gpu_wheels: $count wheels, $((size_kib / 1024)) MiB in $dest (Python $python_version, manylinux glibc <= $glibc; left out: torch, torchvision${skip:+, ${skip//,/, }})"
if [ "$size_kib" -gt $((56 * 1024)) ]; then
  echo "gpu_wheels: note: over 56 MiB; with the working tree that may exceed the 64 MiB a GPU session carries" >&2
fi
