"""The zoo: pretrained generators named `zoo:NAME`, usable wherever a run folder or an export is.

Each entry is an exported generator (generator.safetensors + generator.json, the format of
gankit.checkpoint.export_generator; the json may hold a "card" object). index.json lists the entries:

    {"format": "gankit-zoo", "version": 1,
     "entries": {NAME: {"summary": "one line",
                        "files": {"generator.safetensors": SHA256, "generator.json": SHA256},
                        "url": optional base URL, "size": optional bytes (listing only)}}}

An entry without "url" is shipped in the package, in zoo/NAME/. An entry with "url" lives elsewhere: its
files are downloaded on first use into the user cache ($GANKIT_CACHE, else ~/.cache/gankit) under
zoo/NAME/, each to a temporary file that is renamed into place only once its checksum is right. Both
files are checked against the index every time an entry is resolved, before anything reads them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gankit.errors import GankitError
from gankit.files import sha256_of

ZOO_DIR = Path(__file__).parent  # the shipped entries and index.json (tests point this elsewhere)
INDEX_NAME = "index.json"
INDEX_FORMAT = "gankit-zoo"
INDEX_VERSION = 1
PREFIX = "zoo:"
FILES = ("generator.json", "generator.safetensors")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")  # entry names are also folder names
DOWNLOAD_TIMEOUT_S = 30.0  # per network operation (connect, each read), not for the whole file
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Entry:
    name: str
    summary: str
    files: dict[str, str]  # file name -> hex SHA-256
    url: str | None  # base URL of a download entry; None: shipped in the package
    size: int | None  # bytes of both files: measured for a shipped or cached entry, else the index's "size"

    @property
    def shipped(self) -> bool:
        return self.url is None


def is_zoo_name(source) -> bool:
    """Whether a generator source is a zoo name (`zoo:NAME`)."""
    return isinstance(source, str) and source.startswith(PREFIX)


def index_path() -> Path:
    return ZOO_DIR / INDEX_NAME


def cache_dir() -> Path:
    """The user cache: $GANKIT_CACHE, else ~/.cache/gankit."""
    given = os.environ.get("GANKIT_CACHE")
    return Path(given).expanduser() if given else Path.home() / ".cache" / "gankit"


# ---- the index ----------------------------------------------------------------------------------

def _damaged(why: str) -> GankitError:
    return GankitError(f"the zoo index {index_path()} is damaged ({why}): reinstall gankit")


def load_index() -> dict[str, Entry]:
    """The entries of index.json by name, validated."""
    path = index_path()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GankitError(f"the zoo index {path} is missing: reinstall gankit") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _damaged(str(err)) from None
    if not isinstance(raw, dict) or raw.get("format") != INDEX_FORMAT:
        raise _damaged(f"format is not {INDEX_FORMAT!r}")
    if raw.get("version") != INDEX_VERSION:
        raise GankitError(f"the zoo index {path} has version {raw.get('version')!r}; this gankit reads "
                          f"{INDEX_VERSION}: reinstall gankit")
    entries = raw.get("entries")
    if not isinstance(entries, dict):
        raise _damaged('"entries" is not an object')
    found = {}
    for name, fields in entries.items():
        if not NAME_PATTERN.match(name):
            raise _damaged(f"entry name {name!r} is not lowercase letters, digits, '.', '_' and '-'")
        if not isinstance(fields, dict) or not isinstance(fields.get("summary"), str):
            raise _damaged(f"entry {name} has no summary")
        files = fields.get("files")
        if (not isinstance(files, dict) or set(files) != set(FILES)
                or not all(isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) for v in files.values())):
            raise _damaged(f"entry {name} needs the SHA-256 (64 hex digits) of {' and '.join(FILES)}")
        url, size = fields.get("url"), fields.get("size")
        if url is not None and not (isinstance(url, str) and re.match(r"^(https?|file)://", url)):
            raise _damaged(f"entry {name} has url {url!r}, not an http(s) or file URL")
        if size is not None and (type(size) is not int or size < 0):
            raise _damaged(f"entry {name} has size {size!r}, not a number of bytes")
        found[name] = Entry(name, fields["summary"], dict(files), url, size)
    return found


def list_entries() -> list[Entry]:
    """Every entry, by name; size measured where its files are here (shipped, or downloaded already)."""
    return [_measured(entry) for _, entry in sorted(load_index().items())]


def _measured(entry: Entry) -> Entry:
    folder = _local_folder(entry)
    if not all((folder / f).is_file() for f in FILES):
        return entry
    return Entry(entry.name, entry.summary, entry.files, entry.url, sum((folder / f).stat().st_size for f in FILES))


def entry_names() -> list[str]:
    return sorted(load_index())


def get_entry(name: str) -> Entry:
    """The entry `name` (with or without the zoo: prefix); an unknown name lists the known ones."""
    name = name[len(PREFIX):] if name.startswith(PREFIX) else name
    entries = load_index()
    if name not in entries:
        known = ", ".join(f"{PREFIX}{n}" for n in sorted(entries)) or "none (this gankit ships an empty zoo)"
        raise GankitError(f"{PREFIX}{name}: no such zoo entry; the entries are: {known} (see `gankit zoo`)")
    return entries[name]


def _local_folder(entry: Entry) -> Path:
    return ZOO_DIR / entry.name if entry.shipped else cache_dir() / "zoo" / entry.name


def is_available(entry: Entry) -> bool:
    """Whether an entry's files are here (shipped, or downloaded before); not checked."""
    folder = _local_folder(entry)
    return all((folder / f).is_file() for f in FILES)


# ---- resolving and verifying --------------------------------------------------------------------

def resolve(name: str) -> Path:
    """The verified folder holding generator.json + generator.safetensors of zoo entry `name`
    (`zoo:NAME` or NAME); a download entry is fetched into the cache first if it is not there."""
    entry = get_entry(name)
    folder = _local_folder(entry)
    for file in FILES:
        path = folder / file
        if not path.is_file():
            if entry.shipped:
                raise GankitError(f"{PREFIX}{entry.name}: {path} is missing from the installed package: "
                                  "reinstall gankit")
            download(f"{entry.url.rstrip('/')}/{file}", path, entry.files[file])
        _verify(entry, path, file)
    return folder


def resolve_source(source):
    """A generator source with a zoo name replaced by its verified entry folder; anything else unchanged."""
    return resolve(source) if is_zoo_name(source) else source


def _verify(entry: Entry, path: Path, file: str) -> None:
    expected = entry.files[file]
    try:
        actual = sha256_of(path)
    except OSError as err:
        raise GankitError(f"{PREFIX}{entry.name}: cannot read {path}: {err}") from None
    if actual != expected:
        fix = ("reinstall gankit" if entry.shipped
               else f"delete the cached copy ({path.parent}) and it is downloaded again on next use")
        raise GankitError(f"{PREFIX}{entry.name}: checksum mismatch for {file} ({path}): SHA-256 {actual}, the "
                          f"index expects {expected}; the file is corrupted or was modified: {fix}")


def download(url: str, dest: Path, sha256: str, timeout: float | None = None) -> Path:
    """Fetches url into dest: streamed to a temporary file beside it, checksum verified, then renamed, so
    that a failed, partial or wrong download never leaves a file that looks complete."""
    import http.client
    import urllib.error
    import urllib.request

    timeout = DOWNLOAD_TIMEOUT_S if timeout is None else timeout
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as err:
        raise GankitError(f"cannot write into the zoo cache {dest.parent}: {err} (set GANKIT_CACHE to a "
                          "writable folder)") from None
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=timeout)
            except urllib.error.HTTPError as err:
                raise GankitError(f"could not download {url}: HTTP {err.code} {err.reason}") from None
            except (OSError, http.client.HTTPException, ValueError) as err:  # URLError, timeouts, refusals
                raise GankitError(f"could not download {url} (no network?): {getattr(err, 'reason', None) or err}") \
                    from None
            with response:
                while True:
                    try:
                        chunk = response.read(_CHUNK)
                    except (OSError, http.client.HTTPException) as err:  # a timeout or a connection cut short
                        raise GankitError(f"could not download {url} (no network?): the transfer broke off "
                                          f"({type(err).__name__}: {err})") from None
                    if not chunk:
                        break
                    digest.update(chunk)
                    out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != sha256:
            raise GankitError(f"could not download {url}: the file received has SHA-256 {digest.hexdigest()}, the "
                              f"zoo index expects {sha256} (a changed or truncated file on the server); nothing "
                              "was kept")
        os.replace(tmp, dest)
        tmp = None
    except OSError as err:  # writing the cache (disk full, permissions)
        raise GankitError(f"could not save the download of {url} into {dest.parent}: {err}") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return dest


# ---- cards and the index, for `gankit zoo` and the zoo's training script --------------------------

def card_of(name: str) -> dict:
    """An entry's json "card" object (empty when it has none); the entry is verified first."""
    meta_file = resolve(name) / "generator.json"
    try:
        card = json.loads(meta_file.read_text(encoding="utf-8")).get("card")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as err:
        raise GankitError(f"{meta_file} is not valid JSON: {err}") from None
    return card if isinstance(card, dict) else {}


def index_entry(folder: Path, summary: str, url: str | None = None) -> dict:
    """The index.json entry for an exported generator in `folder` (the checksums of its two files)."""
    entry = {"summary": summary, "files": {f: sha256_of(Path(folder) / f) for f in FILES}}
    if url is not None:
        entry["url"] = url
        entry["size"] = sum((Path(folder) / f).stat().st_size for f in FILES)
    return entry


# ---- `gankit zoo` -------------------------------------------------------------------------------

USAGE = """Use an entry wherever a run folder or an exported generator goes:
  gankit sample zoo:NAME --out grid.png
  gankit interpolate zoo:NAME --out walk.gif
  gankit eval zoo:NAME --metrics fd_fmnist
  gankit train CONFIG --init zoo:NAME       # fine-tune from its weights
`gankit zoo NAME` prints an entry's model card (docs/zoo.md)."""


def _size_text(size: int | None) -> str:
    return "size ?" if size is None else f"{size / 1e6:.1f} MB"


def _where(entry: Entry) -> str:
    if entry.shipped:
        return "shipped"
    return "downloaded" if is_available(entry) else "download"


def zoo_command(name: str | None = None) -> str:
    """`gankit zoo`: a line per entry (name, where it is, size, summary) and how to use one; with a
    name, that entry's model card."""
    if name is not None:
        return describe_entry(name)
    entries = list_entries()
    if not entries:
        return "the zoo has no entries in this gankit"
    rows = [(f"{PREFIX}{e.name}", _where(e), _size_text(e.size), e.summary) for e in entries]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}  {d}" for a, b, c, d in rows]
    return "\n".join([*lines, "", USAGE])


def describe_entry(name: str) -> str:
    """An entry's header (name, summary, where its files are) and its card, as YAML."""
    import yaml

    entry = get_entry(name)
    if entry.shipped:
        where = f"shipped with gankit ({_size_text(_measured(entry).size)})"
    else:
        where = f"downloaded from {entry.url} into {_local_folder(entry)} on first use"
    lines = [f"{PREFIX}{entry.name}: {entry.summary}", where]
    if entry.shipped or is_available(entry):
        card = card_of(entry.name)
        lines += ["", yaml.safe_dump(card, sort_keys=False, allow_unicode=True, width=100).rstrip()
                  if card else "(no model card in its generator.json)"]
    else:
        lines += ["", f"(its card comes with its files: `gankit sample {PREFIX}{entry.name}` downloads them)"]
    lines += ["", f"gankit sample {PREFIX}{entry.name} --out grid.png"]
    return "\n".join(lines)
