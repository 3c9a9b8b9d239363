"""LMDB image databases as LSUN distributes them (keys -> encoded webp/jpeg bytes): reading their
records, and `data.source: lmdb`, which decodes one into memory at the start of training."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm import tqdm

from gankit.data.images import Record, decode_records, default_workers
from gankit.errors import GankitError


@contextmanager
def open_lmdb(path: str | Path):
    """A read-only LMDB environment for a folder holding data.mdb (or the data.mdb file itself)."""
    try:
        import lmdb
    except ImportError:
        raise GankitError("reading LMDB needs the lmdb package: pip install lmdb") from None
    path = Path(path)
    if not path.exists():
        raise GankitError(f"LMDB {path} does not exist (pass the folder holding data.mdb, e.g. bedroom_train_lmdb)")
    if path.is_dir() and not (path / "data.mdb").is_file():
        raise GankitError(f"{path} holds no data.mdb: pass an LMDB folder such as bedroom_train_lmdb")
    try:
        # lock=False: the database is only read, possibly from a read-only disk.
        env = lmdb.open(str(path), subdir=path.is_dir(), readonly=True, lock=False, readahead=False,
                        meminit=False, max_readers=1)
    except lmdb.Error as err:
        raise GankitError(f"cannot open LMDB {path}: {err}") from None
    try:
        yield env
    finally:
        env.close()


def count_entries(env) -> int:
    return int(env.stat()["entries"])


def lmdb_records(env, path: str | Path) -> Iterator[Record]:
    """Every (key, value) of the database in key order as a Record named PATH:KEY."""
    import lmdb

    with env.begin(write=False, buffers=False) as txn:
        cursor = txn.cursor()
        try:
            for key, value in cursor:
                yield Record(f"{path}:{key.decode('utf-8', 'replace')}", bytes(value))
        except lmdb.Error as err:
            raise GankitError(f"LMDB {path} is corrupt ({err}): re-download it or pass --limit "
                              "to stop before the damaged part") from None


def load_lmdb(path: str, size: int, channels: int, limit: int | None = None) -> torch.Tensor:
    """Decodes an LMDB of images into uint8 [N, C, size, size] (shorter side resized, centre crop).

    An LMDB cannot be fixed by hand, so corrupt values are skipped and counted rather than fatal."""
    kept: list[np.ndarray] = []
    skipped: list[str] = []
    with open_lmdb(path) as env:
        total = count_entries(env)
        wanted = min(total, limit) if limit else total
        records = lmdb_records(env, path)
        results = decode_records(records, size, channels, workers=default_workers(wanted))
        progress = tqdm(total=wanted, desc=f"decoding {path}", unit="img", leave=False, disable=wanted < 500)
        try:
            for result in results:
                if result.image is None:
                    skipped.append(f"{result.name}: {result.problem}")
                    continue
                kept.append(result.image)
                progress.update()
                if len(kept) == wanted:
                    break
        finally:
            progress.close()
            results.close()  # stops the decoding processes and ends the read transaction
            records.close()
    if skipped:
        shown = "\n  ".join(skipped[:5])
        print(f"data: skipped {len(skipped)} unreadable value(s) in {path}:\n  {shown}", file=sys.stderr)
    if not kept:
        raise GankitError(f"no readable images in LMDB {path} ({len(skipped)} unreadable values)")
    return torch.from_numpy(np.stack(kept))
