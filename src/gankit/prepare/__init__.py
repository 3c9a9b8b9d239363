"""`gankit prepare KIND SRC DEST`: raw datasets (CelebA, LSUN LMDBs, image folders, IDX files) to one
packed uint8 dataset folder that `data.source: packed` trains on."""

from __future__ import annotations

import argparse
import contextlib
import signal
from pathlib import Path

from gankit.data.images import center_crop_resize, decode_records, default_workers
from gankit.errors import GankitError

KINDS = ("celeba", "lsun", "folder", "idx")


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM unwinds like Ctrl-C, so the temporary folder is removed on the way out."""

    def handle(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handle)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _check_options(args: argparse.Namespace) -> tuple[int, int | None, str, int | None]:
    size, limit = args.size, args.limit
    if not 2 <= size <= 1024:
        raise GankitError(f"--size {size}: must be from 2 to 1024")
    if limit is not None and limit < 1:
        raise GankitError(f"--limit {limit}: must be at least 1")
    crop = getattr(args, "crop", None) or "default"
    if args.kind == "celeba":
        crop = "pgan" if crop == "default" else crop
        if crop not in ("pgan", "dcgan"):
            raise GankitError(f"--crop {crop}: celeba crops are pgan (default) and dcgan")
    elif crop not in ("default", "center"):
        raise GankitError(f"--crop {crop}: only celeba has crop choices; {args.kind} resizes the shorter side "
                          "and cuts the centre square")
    else:
        crop = "center"
    workers = getattr(args, "workers", None)
    if workers is not None and workers < 1:
        raise GankitError(f"--workers {workers}: must be at least 1")
    return size, limit, crop, workers


def prepare_command(args: argparse.Namespace) -> int:
    """Runs `gankit prepare`; returns the exit code."""
    from gankit.prepare.pack import check_dest, pack

    size, limit, crop, workers = _check_options(args)
    src, dest = Path(args.src), Path(args.dest)
    channels = getattr(args, "channels", None) or (1 if args.kind == "idx" else 3)
    check_dest(dest)
    info = {"kind": args.kind, "path": str(src.resolve()), "crop": crop, "limit": limit}

    with contextlib.ExitStack() as stack:
        stack.enter_context(_sigterm_as_interrupt())
        ignored: list[tuple[str, str]] = []
        class_names = None  # celeba and lsun have no classes
        if args.kind == "idx":
            from gankit.prepare.idx import idx_results

            results, expected, class_names = idx_results(src, size, channels)
            info["crop"] = "digits, fitted as the IDX sources: zero-padded to 32 when resolution >= 32, then resized"
        else:
            if args.kind == "lsun":
                from gankit.prepare.lsun import lsun_source

                source = stack.enter_context(lsun_source(src))
                geometry = center_crop_resize
            elif args.kind == "celeba":
                from gankit.prepare.celeba import CROPS, celeba_source

                source = celeba_source(src)
                geometry = CROPS[crop]
            else:
                from gankit.prepare.folder import folder_source

                source = folder_source(src)
                geometry = center_crop_resize
                class_names = source.class_names  # set when every image lies in a class subfolder
            expected, ignored = source.count, source.ignored
            if expected == 0 and not ignored:
                raise GankitError(f"SRC {src} holds no files")
            wanted = min(expected, limit) if limit else expected
            results = decode_records(source.records, size, channels, geometry, workers or default_workers(wanted))
            stack.callback(results.close)  # stops the decoding processes early on --limit or errors
        summary = pack(results, dest, resolution=size, channels=channels, strict=args.strict, limit=limit,
                       expected=expected, source=info, ignored=ignored, class_names=class_names)
    print(summary.describe(channels, size))
    return 0
