"""Writing decoded images into a packed dataset folder, so that an interrupted run leaves nothing
that looks complete: everything goes into a hidden temporary folder beside DEST, the manifest is
written last, and the folder is renamed to DEST only when all is on disk."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from tqdm import tqdm

from gankit.data import packed
from gankit.data.images import Decoded
from gankit.errors import GankitError

PREVIEW_COUNT = 64


@dataclass
class PackSummary:
    dest: Path
    count: int
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, why)
    converted: list[tuple[str, str]] = field(default_factory=list)  # (name, original mode)
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (name, why), never decoded
    class_names: list[str] | None = None  # None: stored without labels

    def describe(self, channels: int, resolution: int) -> str:
        lines = [f"prepared {self.dest}: {self.count} images, {resolution}x{resolution} "
                 f"{'RGB' if channels == 3 else 'grayscale'}"]
        if self.class_names:
            shown = ", ".join(self.class_names[:10]) + (", ..." if len(self.class_names) > 10 else "")
            lines.append(f"  labelled: {len(self.class_names)} class(es) ({shown})")
        else:
            lines.append("  unlabelled (no class labels stored)")
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} unreadable file(s), e.g. {self.skipped[0][0]}: "
                         f"{self.skipped[0][1]}")
        if self.converted:
            modes = sorted({mode for _, mode in self.converted})
            lines.append(f"  converted {len(self.converted)} file(s) from {', '.join(modes)}")
        if self.ignored:
            lines.append(f"  ignored {len(self.ignored)} non-image file(s), e.g. {self.ignored[0][0]}")
        if self.skipped or self.converted or self.ignored:
            lines.append(f"  every file concerned is listed in {self.dest / packed.LOG_FILE}")
        lines.append(f"  train on it with: --set data.source=packed --set data.path={self.dest} "
                     f"--set data.resolution={resolution} --set data.channels={channels}")
        return "\n".join(lines)


def check_dest(dest: Path) -> None:
    """Refuses to overwrite anything: DEST must not exist or be an empty folder."""
    if dest.is_file() or dest.is_symlink():
        raise GankitError(f"DEST {dest} is a file: give a folder name for the packed dataset")
    if dest.is_dir() and any(dest.iterdir()):
        raise GankitError(f"DEST {dest} exists and is not empty: remove it or choose another folder")


def _write_log(path: Path, header: str, summary: PackSummary) -> None:
    with open(path, "w") as log:
        log.write(f"# {header}\n# {summary.count} images written, {len(summary.skipped)} skipped, "
                  f"{len(summary.converted)} converted, {len(summary.ignored)} ignored\n")
        log.write("# what\tfile\tdetail\n")
        for name, why in summary.skipped:
            log.write(f"skipped\t{name}\t{why}\n")
        for name, mode in summary.converted:
            log.write(f"converted\t{name}\tfrom mode {mode}\n")
        for name, why in summary.ignored:
            log.write(f"ignored\t{name}\t{why}\n")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pack(results: Iterable[Decoded], dest: Path, *, resolution: int, channels: int, strict: bool,
         limit: int | None, expected: int | None, source: dict, ignored: list[tuple[str, str]] = (),
         class_names: list[str] | None = None) -> PackSummary:
    """Writes the good images among results (in order, at most limit) as a packed dataset at dest; with
    class_names, also each image's label (every result must carry one) into labels.npy.

    Bad images are skipped and listed in dest/prepare.log; with strict, the first one is an error
    naming it. dest appears only once the whole dataset and its manifest are written."""
    dest = Path(dest)
    check_dest(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    summary = PackSummary(dest, 0, ignored=list(ignored), class_names=list(class_names) if class_names else None)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        _fill(work, results, summary, resolution, channels, strict, limit, expected, source)
        _fsync_folder(work)
        try:
            os.rename(work, dest)  # atomic; replaces dest only if it is an empty folder
        except OSError as err:
            raise GankitError(f"cannot move the finished dataset to {dest}: {err}") from None
    except BaseException:  # errors, Ctrl-C and SIGTERM alike: no half-written dataset stays behind
        shutil.rmtree(work, ignore_errors=True)
        raise
    _fsync_folder(dest.parent)
    return summary


def _fill(work: Path, results: Iterable[Decoded], summary: PackSummary, resolution: int, channels: int,
          strict: bool, limit: int | None, expected: int | None, source: dict) -> None:
    """Writes images, log, preview and (last) the manifest into the temporary folder work."""
    writer = packed.PackedWriter(work / packed.IMAGES_FILE, channels, resolution)
    class_names = summary.class_names
    labels: list[int] = []  # of the images written, in order (skipped files have none)
    preview: list[np.ndarray] = []
    total = min(expected, limit) if expected and limit else (limit or expected)
    try:
        with tqdm(total=total, desc=f"packing {summary.dest.name}", unit="img", disable=None,
                  dynamic_ncols=True) as progress:
            for result in results:
                progress.update()
                if result.image is None:
                    if strict:
                        raise GankitError(f"cannot read image {result.name}: {result.problem} (--strict stops at "
                                          "the first unreadable image; without it such files are skipped and logged)")
                    summary.skipped.append((result.name, result.problem or "unreadable"))
                    continue
                if result.converted_from:
                    summary.converted.append((result.name, result.converted_from))
                if class_names is not None:
                    if result.label is None or not 0 <= result.label < len(class_names):
                        raise ValueError(f"{result.name}: label {result.label!r} is not one of the "
                                         f"{len(class_names)} classes")
                    labels.append(result.label)
                writer.add(result.image)
                if len(preview) < PREVIEW_COUNT:
                    preview.append(result.image)
                if limit and writer.count >= limit:
                    break
        summary.count = writer.count
        if writer.count == 0:
            examples = "; ".join(f"{n}: {why}" for n, why in summary.skipped[:3])
            raise GankitError(f"no readable images in {source.get('path')} ({len(summary.skipped)} unreadable"
                              f"{', e.g. ' + examples if examples else ''}; {len(summary.ignored)} non-image files)")
        checksum = writer.close()
    finally:
        writer.abort()  # closes the file if an error came first; harmless after close()

    _write_log(work / packed.LOG_FILE, f"gankit prepare {source.get('kind')} {source.get('path')} -> {summary.dest}",
               summary)
    from gankit.viz.grid import save_grid

    save_grid(torch.from_numpy(np.stack(preview)), work / packed.PREVIEW_FILE, nrow=8)
    labelling = {}
    if class_names is not None:
        # Written before the manifest, into the same temporary folder: it appears with the dataset or not at all.
        labels_checksum = packed.write_labels(work / packed.LABELS_FILE, np.array(labels, dtype=np.int64))
        labelling = {"class_names": class_names,
                     "labels": {"layout": f"int64 [count] in {packed.LABELS_FILE} (NumPy .npy, no pickled objects)",
                                "count": len(labels), "checksum": labels_checksum}}
    manifest = {
        "format": packed.FORMAT, "version": packed.VERSION,
        "count": writer.count, "resolution": resolution, "channels": channels,
        "layout": "uint8 [count, channels, resolution, resolution] after a "
                  f"{packed.HEADER_BYTES}-byte header in {packed.IMAGES_FILE}",
        "checksum": checksum,
        **labelling,
        "source": source,
        "skipped": len(summary.skipped), "converted": len(summary.converted), "ignored": len(summary.ignored),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    # mkdtemp and the atomic writers create private files; the dataset gets the usual permissions.
    mask = _umask()
    os.chmod(work, 0o777 & ~mask)
    for item in work.iterdir():
        os.chmod(item, 0o666 & ~mask)
    # The manifest is the last file written: a folder without one is never taken for a dataset.
    with open(work / packed.MANIFEST_FILE, "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
