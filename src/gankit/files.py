"""Durable file writing for every part of gankit: a temporary file beside the target, flushed to disk,
then renamed over it, so that a half-written file never replaces a good one.

At the bottom of the import graph (it imports nothing of gankit but the error type): the checkpoint
formats, the training loop, the metrics and the plots all write through it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Callable

from gankit.errors import GankitError

# atomic_write's temporary files: "." + target name + "." + mkstemp's 8 random characters + ".tmp".
TEMPORARY_PATTERN = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp$")


class StorageError(GankitError, OSError):
    """A write failed (disk full, quota, permissions): the message names the file and the cause.

    Also an OSError, so code that handles failed writes keeps working."""

    # EX_IOERR from sysexits.h, not 2: a scheduler can tell "free space and rerun" from "fix the input".
    exit_code = 74


def _default_file_mode() -> int:
    # mkstemp creates 0600 files; finished files get the mode open() would give them under the umask.
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _default_file_mode()


def describe_os_error(err: OSError, path: Path | str | None = None) -> str:
    """'could not write PATH: No space left on device (ENOSPC)' from an OSError."""
    target = path or err.filename or "a file"
    code = errno.errorcode.get(err.errno or 0)
    cause = err.strerror or str(err) or type(err).__name__
    return f"could not write {target}: {cause}" + (f" ({code})" if code else "")


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Calls write(tmp_path) on a temporary file beside path, flushes it to disk, then renames it
    over path. On any failure the temporary file is removed and path is untouched; an OSError
    (disk full, quota, permissions) becomes a StorageError naming path and the cause."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, _FILE_MODE)
        finally:
            os.close(fd)
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        if isinstance(err, OSError):
            raise StorageError(describe_os_error(err, path) + f"; {path.name} was left as it was") from None
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def sha256_of(path: Path | str, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (a large file is never held in memory whole)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
