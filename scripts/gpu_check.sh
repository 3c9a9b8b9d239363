#!/usr/bin/env bash
# The GPU checks in one command, for a CUDA machine without network: the `cuda` tests (tests/test_cuda.py),
# a tiny DDP run over every visible GPU (then resumed), and the DCGAN-64 training-speed benchmark in fp32,
# bf16, fp16, channels_last and torch.compile variants, all written to ONE JSON file, in under 8 minutes
# on one GPU. It uses the machine's own torch and torchvision: a venv that sees them gets gankit and its
# missing dependencies with `pip install --no-index` from the wheels that scripts/gpu_wheels.sh downloaded
# beforehand. The data is a fake Fashion-MNIST written here (tests/fixtures.py): no dataset, no download.
# Each phase has a time limit; a failed phase is recorded and the next one runs. Without a CUDA GPU it
# says so, runs what needs none (set-up, collecting the tests) and writes the JSON with the rest skipped.
#
#   bash scripts/gpu_wheels.sh .gpu-wheels     # first, where the package registries are reachable
#   bash scripts/gpu_check.sh [--out FILE] [--wheels DIR] [--python PYTHON] [--venv DIR] [--cpu]
#
# --out: the JSON (default docs/gpu-check.json). --wheels: default .gpu-wheels. --python: the interpreter
# with the CUDA torch (default python3 if it imports torch, else .venv/bin/python). --venv: default
# $TMPDIR/gankit-gpu-venv, reused by a second run. --cpu: the DDP and speed phases on the CPU with tiny
# settings (gloo, 2 processes), to try this script on a machine without a GPU.
# Exit status: 0 every phase passed, 1 a phase failed or timed out, 2 bad arguments, 3 no CUDA GPU.
set -uo pipefail
cd "$(dirname "$0")/.."

python=""
arguments=("$@")
for ((i = 0; i < ${#arguments[@]}; i++)); do
  [ "${arguments[i]}" = --python ] && python=${arguments[i + 1]:-}
done
if [ -z "$python" ]; then
  if python3 -c "import torch" 2>/dev/null; then
    python=python3
  elif [ -x .venv/bin/python ]; then
    python=.venv/bin/python
  else
    python=python3
  fi
fi
command -v "$python" >/dev/null || { echo "gpu_check: no Python at $python" >&2; exit 2; }

exec "$python" - "$@" <<'PY'
"""gpu_check's phases: machine, setup, cuda_tests, ddp, train_speed (see scripts/gpu_check.sh)."""

import argparse
import datetime
import json
import os
import re
import signal
import site
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

REPO = Path.cwd()
TOTAL_LIMIT_S = 470  # the whole check stays under 8 minutes on one GPU
PHASE_LIMIT_S = {"setup": 150, "cuda_tests": 240, "ddp": 90, "train_speed": 240}
CPU_SLOWDOWN = 4  # --cpu: the same phases on a small CPU take longer
TAIL_CHARS = 3000
FAKE_IMAGES = 512
SPEED_VARIANTS = "fp32,fp32+cl,bf16,bf16+cl,fp16,fp16+cl,fp32+compile,bf16+cl+compile"
SPEED_ARGS = {
    "cuda": ["--case", "dcgan64", "--variants", SPEED_VARIANTS, "--rounds", "2", "--steps", "60"],
    # A dry run of the plumbing: a tiny gankit model; the reference keeps its width.
    "cpu": ["--case", "dcgan32", "--variants", "fp32,bf16", "--rounds", "1", "--steps", "5",
            "--extra", "model.g_channels=8", "--extra", "model.d_channels=8"],
}
DDP_SETTINGS = {  # per GPU: 16 images of the global batch; first run to `steps`, then resumed to `resumed`
    "cuda": {"steps": 20, "resumed": 30, "every": 10, "extra": []},
    "cpu": {"steps": 4, "resumed": 6, "every": 2, "extra": ["data.resolution=16", "model.g_channels=8",
                                                            "model.d_channels=8"]},
}
PROBE = r"""
import json, os, platform, torch
info = {"torch_site": os.path.dirname(os.path.dirname(os.path.realpath(torch.__file__))),"python": platform.python_version(), "python_path": __import__("sys").executable,
        "torch": torch.__version__, "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0, "gpus": []}
try:
    import torchvision
    info["torchvision"] = torchvision.__version__
except Exception as err:
    info["torchvision"] = None
if info["cuda_available"]:
    info["cudnn"] = torch.backends.cudnn.version()
    info["bf16_native"] = torch.cuda.is_bf16_supported(including_emulation=False)
    for index in range(info["gpu_count"]):
        p = torch.cuda.get_device_properties(index)
        info["gpus"].append({"name": p.name, "capability": f"{p.major}.{p.minor}",
                             "memory_gib": round(p.total_memory / 2**30, 1), "multiprocessors": p.multi_processor_count})
print(json.dumps(info))
"""


def parse_args():
    parser = argparse.ArgumentParser(prog="scripts/gpu_check.sh", description="gankit's GPU checks, one JSON")
    parser.add_argument("--out", default="docs/gpu-check.json", help="the JSON of results")
    parser.add_argument("--wheels", default=".gpu-wheels", help="wheels from scripts/gpu_wheels.sh")
    parser.add_argument("--python", help="the interpreter with the CUDA torch (read by the shell wrapper)")
    parser.add_argument("--venv", default=str(Path(tempfile.gettempdir()) / "gankit-gpu-venv"))
    parser.add_argument("--cpu", action="store_true", help="DDP and speed phases on the CPU, tiny (a dry run)")
    return parser.parse_args()


def tail(path: Path) -> str:
    text = path.read_text(errors="replace") if path.is_file() else ""
    return text[-TAIL_CHARS:]


def run(command, log: Path, limit_s: float, env=None) -> tuple[int | str, float]:
    """Runs command with its output appended to log: (exit code or "timeout", seconds). One that outlives
    limit_s is stopped with its whole process group (torchrun's workers too)."""
    started = time.monotonic()
    with open(log, "ab") as out:
        out.write(f"$ {' '.join(map(str, command))}\n".encode())
        out.flush()
        proc = subprocess.Popen([str(c) for c in command], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=REPO, start_new_session=True)
        try:
            code = proc.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            code = "timeout"
            for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, None)):
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(timeout=grace)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue
    return code, time.monotonic() - started


class Check:
    """The JSON being built; rewritten after every phase, so a check cut short still leaves its results."""

    def __init__(self, args):
        self.args, self.out = args, Path(args.out)
        self.work = Path(tempfile.mkdtemp(prefix="gankit-gpu-check-"))
        self.started = time.monotonic()
        self.slowdown = CPU_SLOWDOWN if args.cpu else 1
        self.result = {"format": "gankit-gpu-check", "version": 1, "complete": False,
                       "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                       "command": "bash scripts/gpu_check.sh " + " ".join(sys.argv[1:]), "machine": {}, "phases": {}}

    def limit(self, phase: str) -> float:
        left = TOTAL_LIMIT_S * self.slowdown - (time.monotonic() - self.started)
        return max(10.0, min(PHASE_LIMIT_S[phase] * self.slowdown, left))

    def record(self, phase: str, status: str, **fields) -> None:
        self.result["phases"][phase] = {"status": status, **fields}
        seconds = f" ({fields['seconds']:.0f} s)" if "seconds" in fields else ""
        reason = f": {fields['reason']}" if "reason" in fields else ""
        print(f"gpu_check: {phase} {status}{seconds}{reason}", flush=True)
        self.write()

    def write(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.out.with_name(self.out.name + ".tmp")
        temporary.write_text(json.dumps(self.result, indent=2) + "\n")
        temporary.replace(self.out)


def machine(check: Check) -> dict:
    info = {"cpus": os.cpu_count()}
    try:
        probe = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=180)
        error = probe.stderr if probe.returncode else None
    except subprocess.TimeoutExpired:
        probe, error = None, "the probe of torch and CUDA took over 180 s"
    if error is None:
        info.update(json.loads(probe.stdout.strip().splitlines()[-1]))
    else:
        info.update(python_path=sys.executable, torch=None, cuda_available=False, gpu_count=0,
                    probe_error=error[-TAIL_CHARS:])
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=60)
        info["nvidia_smi"] = smi.stdout.strip().splitlines() if smi.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        info["nvidia_smi"] = None
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30, cwd=REPO)
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                 text=True, timeout=30, cwd=REPO)
        if head.returncode == 0:
            info["git_commit"] = head.stdout.strip()
            info["git_modified_files"] = len(changed.stdout.splitlines())
    except (OSError, subprocess.TimeoutExpired):
        pass
    check.result["machine"] = info
    check.write()
    return info


def requirements() -> list[str]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        from pip._vendor import tomli as tomllib
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return project["dependencies"] + project["optional-dependencies"]["test"]


def setup(check: Check, info: dict) -> tuple[list[str], dict] | None:
    """A venv that sees this Python's packages, with gankit installed offline. Returns (python, env)."""
    started, log, limit = time.monotonic(), check.work / "setup.log", check.limit("setup")
    deadline = started + limit
    venv, wheels = Path(check.args.venv), REPO / check.args.wheels
    venv_python = venv / "bin" / "python"
    left = lambda: max(5.0, deadline - time.monotonic())
    created = "reused"
    if not venv_python.exists():
        code, _ = run([sys.executable, "-m", "venv", "--system-site-packages", venv], log, left())
        created = "venv"
        if code != 0:  # no ensurepip here: a venv without pip, driven by this Python's pip
            code, _ = run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", venv], log, left())
            created = "venv without pip"
        if code != 0:
            check.record("setup", "failed", seconds=time.monotonic() - started, reason="could not make a venv",
                         log_tail=tail(log))
            return None
    # --system-site-packages shows the base interpreter's packages; when this Python is itself a venv (the
    # lent H200's python3 is /opt/torch/.venv), its torch lives elsewhere: add its site folders explicitly.
    purelib = subprocess.run([venv_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, timeout=60).stdout.strip()
    if not purelib:
        check.record("setup", "failed", seconds=time.monotonic() - started, reason=f"{venv_python} does not run",
                     log_tail=tail(log))
        return None
    own_sites = dict.fromkeys(p for p in [*site.getsitepackages(), info["torch_site"]] if Path(p).is_dir())
    (Path(purelib) / "gankit_gpu_check_base.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in own_sites))
    has_pip = subprocess.run([venv_python, "-m", "pip", "--version"], capture_output=True).returncode == 0
    pip = [venv_python, "-m", "pip"] if has_pip else [sys.executable, "-m", "pip", "--python", venv_python]
    offline = ["install", "--disable-pip-version-check", "--no-input", "--no-index"]
    offline += ["--find-links", wheels] if wheels.is_dir() else []
    code, _ = run([*pip, *offline, "-e", ".[test]"], log, left())
    missing = []
    if code != 0:  # some dependency has no wheel here: gankit alone, then each requirement that can be had
        run([*pip, *offline, "--no-deps", "--no-build-isolation", "-e", "."], log, left())
        for requirement in requirements():
            if re.match(r"torch(vision)?\b(?!-)", requirement):
                continue  # the machine's own (the probe above reports them); never installed from wheels
            if run([*pip, *offline, requirement], log, left())[0] != 0:
                missing.append(requirement)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg", "GANKIT_CACHE": str(check.work / "cache")}
    verify = subprocess.run([venv_python, "-c", "import gankit, torch, pytest; print(gankit.__file__)"],
                            capture_output=True, text=True, env=env, timeout=120)
    source = "importable"
    if verify.returncode != 0:  # gankit not installed: run it from the source tree
        source = "PYTHONPATH=src"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
        verify = subprocess.run([venv_python, "-c", "import gankit, torch, pytest; print(gankit.__file__)"],
                                capture_output=True, text=True, env=env, timeout=120)
    installed = sorted(p.name.removesuffix(".dist-info") for p in Path(purelib).glob("*.dist-info"))
    fields = {"seconds": time.monotonic() - started, "python": str(venv_python), "venv": created,
              "wheels": str(wheels) if wheels.is_dir() else None, "installed_in_venv": installed,
              "missing": missing, "gankit": verify.stdout.strip() or None, "gankit_from": source}
    if verify.returncode != 0:
        check.record("setup", "failed", **fields, reason="gankit, torch or pytest cannot be imported",
                     log_tail=tail(log) + verify.stderr[-TAIL_CHARS:])
        return None
    check.record("setup", "passed" if not missing else "partial", **fields,
                 **({"reason": f"no wheel for {', '.join(missing)}", "log_tail": tail(log)} if missing else {}))
    return [str(venv_python)], env


def fake_fashion_mnist(check: Check, python: list[str], env: dict) -> Path:
    folder = check.work / "fashion-mnist"
    if not folder.is_dir():
        subprocess.run([*python, "tests/fixtures.py", "mnist", folder, str(FAKE_IMAGES)], check=True, env=env,
                       cwd=REPO, capture_output=True)
    return folder


def cuda_tests(check: Check, python: list[str], env: dict, has_gpu: bool) -> None:
    log, report = check.work / "cuda_tests.log", check.work / "cuda_tests.xml"
    code, seconds = run([*python, "-m", "pytest", "-m", "cuda", "-v", "-rs", "-p", "no:cacheprovider",
                         f"--junitxml={report}", "tests/test_cuda.py"], log, check.limit("cuda_tests"), env)
    tests = []
    if report.is_file():
        for case in ElementTree.parse(report).iter("testcase"):
            outcome, message = "passed", ""
            for child in case:
                if child.tag in ("failure", "error", "skipped"):
                    outcome, message = {"failure": "failed"}.get(child.tag, child.tag), child.get("message", "")
            tests.append({"test": case.get("name"), "outcome": outcome, "seconds": float(case.get("time", 0)),
                          **({"message": message[:500]} if message else {})})
    else:  # killed before pytest wrote its report: read the verbose lines
        for match in re.finditer(r"::(\S+) (PASSED|FAILED|SKIPPED|ERROR)", log.read_text(errors="replace")):
            tests.append({"test": match.group(1), "outcome": match.group(2).lower()})
    counts = {k: sum(t["outcome"] == k for t in tests) for k in ("passed", "failed", "error", "skipped")}
    fields = {"seconds": seconds, "exit_code": code, "counts": counts, "tests": tests}
    if code == "timeout":
        check.record("cuda_tests", "timeout", **fields, log_tail=tail(log))
    elif counts["failed"] or counts["error"] or code not in (0, 5):
        check.record("cuda_tests", "failed", **fields, log_tail=tail(log))
    elif not has_gpu:
        check.record("cuda_tests", "skipped", **fields, reason="no CUDA GPU: collected and skipped")
    else:
        check.record("cuda_tests", "passed", **fields)


def ddp(check: Check, python: list[str], env: dict, device: str, processes: int, data: Path) -> None:
    """gankit train under torchrun over `processes` ranks, then resumed with the same command."""
    started, log, limit = time.monotonic(), check.work / "ddp.log", check.limit("ddp")
    settings = DDP_SETTINGS[device]
    run_dir = check.work / "ddp_run"
    launcher = [*python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
                "-m", "gankit", "train"]
    sets = [f"data.path={data}", f"data.max_images={FAKE_IMAGES}", f"train.batch_size={16 * processes}",
            f"train.steps={settings['steps']}", f"train.log_every={settings['every'] // 2}",
            f"train.sample_every={settings['every']}", f"train.checkpoint_every={settings['every']}",
            *settings["extra"]]
    env = {**env, "OMP_NUM_THREADS": "1"} if device == "cpu" else env
    first, _ = run([*launcher, "dcgan-fashion-mnist", "--out", run_dir, "--device", device,
                    *[a for s in sets for a in ("--set", s)]], log, limit, env)
    resumed = "not run"
    if first == 0:
        resumed, _ = run([*launcher, run_dir, "--device", device, "--set", f"train.steps={settings['resumed']}"],
                         log, max(10.0, started + limit - time.monotonic()), env)
    text = (run_dir / "log.txt").read_text() if (run_dir / "log.txt").is_file() else ""
    world = re.search(r"\((\d+) processes under torchrun\)", text)
    world_size = int(world.group(1)) if world else 1
    records = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()] \
        if (run_dir / "stats.jsonl").is_file() else []
    last = records[-1] if records else {}
    precision = re.search(r"train\.precision auto: (\w+)", text)
    fields = {
        "seconds": time.monotonic() - started, "device": device, "processes": processes, "world_size": world_size,
        "process_group": ("nccl" if device == "cuda" else "gloo") if world_size > 1 else "none: one process",
        "exit_codes": {"first": first, "resumed": resumed}, "resumed_at_step": settings["steps"]
        if f"at step {settings['steps']}" in text else None,
        "final_step": last.get("step"), "images_seen": last.get("images_seen"),
        "precision": precision.group(1) if precision else None,
        "img_per_s_median": statistics.median(r["img_per_s"] for r in records[1:]) if len(records) > 1 else None,
        "last_losses": {k: last[k] for k in ("d_loss", "g_loss") if k in last},
    }
    if processes == 1:
        fields["note"] = "one GPU: gankit trains as one process under torchrun (nccl needs 2 GPUs or more)"
    ok = first == 0 and resumed == 0 and last.get("step") == settings["resumed"] and world_size == processes \
        and fields["resumed_at_step"] is not None
    status = "timeout" if "timeout" in (first, resumed) else ("passed" if ok else "failed")
    check.record("ddp", status, **fields, **({} if ok else {"log_tail": tail(log)}))


def train_speed(check: Check, python: list[str], env: dict, device: str, data: Path) -> None:
    log, results = check.work / "train_speed.log", check.work / "train_speed.json"
    code, seconds = run([*python, "benchmarks/train_speed.py", "--device", device, *SPEED_ARGS[device],
                         "--data-path", data, "--json", results], log, check.limit("train_speed"), env)
    measured = json.loads(results.read_text()) if results.is_file() else {}
    fields = {"seconds": seconds, "exit_code": code, "arguments": SPEED_ARGS[device], **measured}
    if code == 0 and measured.get("complete"):
        check.record("train_speed", "passed", **fields)
    else:
        check.record("train_speed", "timeout" if code == "timeout" else "failed", **fields, log_tail=tail(log))


def main() -> int:
    args = parse_args()
    check = Check(args)
    info = machine(check)
    has_gpu = bool(info.get("cuda_available"))
    device = "cuda" if has_gpu else "cpu"
    if not has_gpu:
        print(f"gpu_check: no CUDA GPU: {info.get('python_path', sys.executable)} with torch {info.get('torch')} "
              "sees none (torch.cuda.is_available() is False). Set-up and the tests' collection run; "
              + ("the DDP and speed phases run on the CPU (--cpu)" if args.cpu else "the GPU phases are skipped"),
              flush=True)
    else:
        print(f"gpu_check: {info['gpu_count']} x {info['gpus'][0]['name']}, torch {info['torch']} "
              f"(CUDA {info['torch_cuda']}); results in {check.out}", flush=True)
    ready = setup(check, info) if info.get("torch") else None
    if info.get("torch") is None:
        check.record("setup", "failed", reason=f"{sys.executable} has no torch: pass --python")
    if ready is None:
        for phase in ("cuda_tests", "ddp", "train_speed"):
            check.record(phase, "skipped", reason="set-up failed")
    else:
        python, env = ready
        cuda_tests(check, python, env, has_gpu)
        if has_gpu or args.cpu:
            data = fake_fashion_mnist(check, python, env)
            ddp(check, python, env, device, info["gpu_count"] if has_gpu else 2, data)
            train_speed(check, python, env, device, data)
        else:
            for phase in ("ddp", "train_speed"):
                check.record(phase, "skipped", reason="no CUDA GPU")
    phases = check.result["phases"]
    check.result["summary"] = {s: [p for p, r in phases.items() if r["status"] == s]
                               for s in ("passed", "partial", "failed", "timeout", "skipped")}
    check.result["seconds"] = round(time.monotonic() - check.started, 1)
    check.result["complete"] = True
    check.write()
    print(f"gpu_check: wrote {check.out} in {check.result['seconds']:.0f} s: "
          + ", ".join(f"{len(v)} {k}" for k, v in check.result["summary"].items() if v)
          + f" (phase logs in {check.work})", flush=True)
    if any(r["status"] in ("failed", "timeout") for r in phases.values()):
        return 1
    return 0 if has_gpu or args.cpu else 3


sys.exit(main())
PY
