"""Records of every image in a folder tree or a zip file, their classes (first-level subfolders, as
the folder and zip training sources find them), and the files that are not images."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from gankit.data.images import IMAGE_EXTENSIONS, Record, folder_classes, is_image_name, walk_files, zip_classes
from gankit.errors import GankitError

NOT_AN_IMAGE = f"not an image file name ({' '.join(sorted(IMAGE_EXTENSIONS))})"


@dataclass
class FileSource:
    """The image records of a source, their count, the files passed over without decoding, and the class
    names when every image lies in a class subfolder (each record then carries its label)."""

    records: Iterator[Record]
    count: int
    ignored: list[tuple[str, str]] = field(default_factory=list)
    class_names: list[str] | None = None


def _zip_records(archive: zipfile.ZipFile, path: Path, names: list[str], labels) -> Iterator[Record]:
    with archive:
        for name, label in zip(names, labels):
            try:
                yield Record(f"{path}:{name}", archive.read(name), label=label)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as err:
                yield Record(f"{path}:{name}", None, f"cannot read it from the zip: {err}", label=label)


def _labels_of(classes, count: int) -> list:
    return [int(label) for label in classes.labels] if classes.labelled else [None] * count


def folder_source(src: str | Path) -> FileSource:
    """The images below a folder (recursively, loop-safe) or inside a zip, in sorted order."""
    src = Path(src)
    if src.is_file() and zipfile.is_zipfile(src):
        try:
            archive = zipfile.ZipFile(src)
        except (OSError, zipfile.BadZipFile) as err:
            raise GankitError(f"cannot open zip {src}: {err}") from None
        entries = sorted(n for n in archive.namelist() if not n.endswith("/"))
        names = [n for n in entries if is_image_name(n)]
        ignored = [(f"{src}:{n}", NOT_AN_IMAGE) for n in entries if not is_image_name(n)]
        classes = zip_classes(src, names)
        return FileSource(_zip_records(archive, src, names, _labels_of(classes, len(names))), len(names), ignored,
                          classes.names)
    if not src.is_dir():
        raise GankitError(f"SRC {src} is neither a folder nor a zip file of images")
    files, ignored = [], []
    for path in walk_files(src):
        if is_image_name(path.name):
            files.append(path)
        else:
            ignored.append((str(path), NOT_AN_IMAGE))
    classes = folder_classes(src, files)
    records = (Record(str(p), str(p), label=label) for p, label in zip(files, _labels_of(classes, len(files))))
    return FileSource(records, len(files), ignored, classes.names)
