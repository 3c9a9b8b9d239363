"""What the quality benchmarks share: gankit's command line in this interpreter, and a run's fd_fmnist."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def gankit_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "gankit", *args]


def score(folder: Path) -> dict:
    """`gankit eval FOLDER --metrics fd_fmnist` (seed 0), kept beside the run as FOLDER.fd_fmnist.json."""
    out = folder.parent / f"{folder.name}.fd_fmnist.json"
    subprocess.run(gankit_command("eval", str(folder), "--metrics", "fd_fmnist", "--out", str(out), "--seed", "0"),
                   check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())
