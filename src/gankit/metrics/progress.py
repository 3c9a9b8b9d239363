"""Progress bars for evaluation work (generating samples, extracting features, SWD descriptors and
sorts), drawn like training's and prepare's: on stderr, only when stderr is a terminal."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(total: int, desc: str, unit: str = "img", enabled: bool | None = None) -> tqdm:
    """A tqdm bar that disappears when done. enabled None: shown when stderr is a terminal (so logs,
    CI and a training run's periodic evaluations stay free of bar output)."""
    disable = None if enabled is None else not enabled
    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True, disable=disable,
                file=sys.stderr)
