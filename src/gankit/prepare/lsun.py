"""LSUN category databases (e.g. bedroom_train_lmdb): an LMDB whose values are encoded webp/jpeg
images, read in key order; each image has its shorter side resized and the centre square cut."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from gankit.data.lmdb_source import count_entries, lmdb_records, open_lmdb
from gankit.prepare.folder import FileSource


@contextmanager
def lsun_source(src: str | Path) -> Iterator[FileSource]:
    with open_lmdb(src) as env:
        records = lmdb_records(env, src)
        try:
            yield FileSource(records, count_entries(env))
        finally:
            records.close()  # ends the read transaction before the environment closes
