"""Records of every image in a folder tree or a zip file, and the files that are not images."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from gankit.data.images import IMAGE_EXTENSIONS, Record, is_image_name, walk_files
from gankit.errors import GankitError

NOT_AN_IMAGE = f"not an image file name ({' '.join(sorted(IMAGE_EXTENSIONS))})"


@dataclass
class FileSource:
    """The image records of a source, their count, and the files passed over without decoding."""

    records: Iterator[Record]
    count: int
    ignored: list[tuple[str, str]] = field(default_factory=list)


def _zip_records(archive: zipfile.ZipFile, path: Path, names: list[str]) -> Iterator[Record]:
    with archive:
        for name in names:
            try:
                yield Record(f"{path}:{name}", archive.read(name))
            except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as err:
                yield Record(f"{path}:{name}", None, f"cannot read it from the zip: {err}")


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
        return FileSource(_zip_records(archive, src, names), len(names), ignored)
    if not src.is_dir():
        raise GankitError(f"SRC {src} is neither a folder nor a zip file of images")
    files, ignored = [], []
    for path in walk_files(src):
        if is_image_name(path.name):
            files.append(path)
        else:
            ignored.append((str(path), NOT_AN_IMAGE))
    return FileSource((Record(str(p), str(p)) for p in files), len(files), ignored)
