"""Command line: argument parsing and dispatch only."""

from __future__ import annotations

import argparse
import sys

from gankit.errors import GankitError


def _cmd_train(args: argparse.Namespace) -> int:
    from gankit.checkpoint import list_checkpoints, remove_stale_temporaries
    from gankit.files import StorageError, describe_os_error
    from gankit.training.lock import RunLock
    from gankit.training.distributed import current
    from gankit.training.loop import train
    from gankit.training.rundir import plan_run, run_dir_for

    if args.init is not None and args.resume not in ("auto", "never"):
        raise GankitError("--init starts a fresh run from other weights and --resume PATH continues a checkpoint: "
                          "give one of them")
    replica = current()  # under torchrun, rank 0 reads and locks the run folder and tells the other ranks
    run_dir = replica.on_main(run_dir_for, args.config, args.out, args.set)
    with RunLock(run_dir):  # held until training ends: a second `gankit train` on this folder is refused
        replica.on_main(remove_stale_temporaries, run_dir)  # left by a killed run; safe only under the lock
        plan = replica.agree_on_plan(plan_run, args.config, args.out, args.set, args.resume)
        init_from = _init_source(args, plan, replica)
        try:
            result = train(plan.config, plan.run_dir, plan.checkpoint, args.device, init_from)
        except OSError as err:  # a StorageError is one too
            message = str(err) if isinstance(err, StorageError) else describe_os_error(err)
            saved = list_checkpoints(plan.run_dir)
            raise StorageError(f"{message}. Training stopped; the newest complete checkpoint is "
                               f"{saved[-1] if saved else 'none yet'}: free space (or fix the cause) and run "
                               "the same command to continue") from None
    if result["interrupted"] is not None:
        return 128 + int(result["interrupted"])
    return 0


def _init_source(args: argparse.Namespace, plan, replica) -> str | None:
    """The --init source for a fresh run; None when there is none or the run resumes (resuming wins)."""
    if args.init is None:
        return None
    if plan.checkpoint is None:
        return args.init
    from gankit.training.init import started_from

    # The same command again (after a stop) continues the run it started: its log.txt names the source.
    if replica.on_main(started_from, plan.run_dir / "log.txt", args.init):
        if replica.is_main:
            print(f"{plan.run_dir} was started from --init {args.init}; it has checkpoints, so it resumes from "
                  f"{plan.checkpoint.name} (resuming wins over --init)")
        return None
    raise GankitError(f"--init {args.init}: {plan.run_dir} already has checkpoints (newest {plan.checkpoint.name}), "
                      f"and resuming wins over --init: drop --init to continue that run, or give a new --out to "
                      f"fine-tune from {args.init}")


def _cmd_train_under_torchrun(args: argparse.Namespace) -> int:
    """`gankit train`; launched by torchrun, inside one process group for the whole command."""
    from gankit.training.distributed import session

    with session(args.device):
        return _cmd_train(args)


def _cmd_presets(args: argparse.Namespace) -> int:
    from gankit.config import preset_description, preset_names

    names = preset_names()
    width = max(len(n) for n in names)
    for name in names:
        print(f"{name:<{width}}  {preset_description(name)}")
    return 0


def _cmd_zoo(args: argparse.Namespace) -> int:
    from gankit.zoo import zoo_command

    print(zoo_command(args.name))
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    from gankit.sampling import sample_command

    print(sample_command(args.source, args.num, args.seed, args.out, args.out_dir, args.no_ema, args.device,
                         args.classes, args.truncation))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from gankit.sampling import export_command

    print(export_command(args.run, args.out))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from gankit.metrics.command import eval_command

    return eval_command(args)


def _cmd_interpolate(args: argparse.Namespace) -> int:
    from gankit.viz.interpolate import interpolate_command

    return interpolate_command(args)


def _cmd_report(args: argparse.Namespace) -> int:
    from gankit.viz.report import report_command

    return report_command(args)


def _cmd_prepare(args: argparse.Namespace) -> int:
    from gankit.prepare import prepare_command

    return prepare_command(args)


TRUNCATION_HELP = ("StyleGAN2: the truncation trick, w = w_avg + PSI (w - w_avg) with the average w tracked in "
                   "training, PSI from 0 (every sample the average's image) to 1 (none, the default)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gankit", description="Train, sample and evaluate GANs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train from a YAML config or a preset (or continue a run folder)")
    p.add_argument("config", metavar="CONFIG", help="YAML file, preset name (see `gankit presets`) or run folder")
    p.add_argument("--out", help="run folder (default: runs/<config name>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.steps=2000 (repeatable)")
    p.add_argument("--resume", default="auto", metavar="auto|never|PATH",
                   help="auto: continue from the newest checkpoint in the run folder (default); never: refuse "
                        "a non-empty run folder; PATH: start from that checkpoint")
    p.add_argument("--init", metavar="zoo:NAME|RUN|EXPORT",
                   help="fine-tune: a fresh run's G and G_ema start from this generator (a zoo entry, an exported "
                        "generator, a run folder or a checkpoint file), and D from a run's or checkpoint's D "
                        "(else fresh); the config must describe the same networks")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=_cmd_train_under_torchrun)

    p = sub.add_parser("presets", help="list the built-in presets")
    p.set_defaults(func=_cmd_presets)

    p = sub.add_parser("zoo", help="list the pretrained generators (use one as zoo:NAME), or show one's card")
    p.add_argument("name", nargs="?", metavar="NAME", help="an entry: print its model card")
    p.set_defaults(func=_cmd_zoo)

    p = sub.add_parser("sample", help="generate images (or toy points) from a run or an exported generator")
    p.add_argument("source", metavar="RUN|FILE", help="a run folder, an exported generator, a checkpoint file "
                                                      "(RUN/checkpoints/step_N.pt) or a zoo entry (zoo:NAME, see "
                                                      "`gankit zoo`)")
    p.add_argument("--num", type=int, default=64, help="how many samples (default 64); with --class, of each class")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--class", dest="classes", action="append", default=[], metavar="NAME|INDEX",
                   help="conditional runs: samples of this class only, by name or index (repeatable: a grid row "
                        "per class). Without it a conditional run's grid has a row per class")
    p.add_argument("--out", help="grid .png (images); .npy points or .png scatter plot (toy runs; conditional: "
                                 "the classes in POINTS.labels.npy)")
    p.add_argument("--out-dir", help="write one PNG per image into this folder instead of a grid (conditional: "
                                     "their classes in labels.csv)")
    p.add_argument("--no-ema", action="store_true",
                   help="use the raw generator of the checkpoint (a run's newest) instead of the EMA one")
    p.add_argument("--truncation", type=float, metavar="PSI", help=TRUNCATION_HELP)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("export", help="write the EMA generator as generator.safetensors + generator.json")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--out", help="folder to write into (default: the run folder)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("interpolate", help="latent interpolation: lerp, slerp or the 2-D grid; conditional "
                                           "runs also between two classes; StyleGAN2 also in W and the "
                                           "style-mixing grid")
    p.add_argument("source", metavar="RUN|FILE", help="as for sample: a run folder, an export, a checkpoint file "
                                                      "or zoo:NAME")
    p.add_argument("--mode", default="slerp", choices=["lerp", "slerp", "grid", "classes", "style-mix"],
                   help="lerp: straight lines (StyleGAN2: in W by default); slerp: great circles in Z; grid: the "
                        "2-D sweep, first half of the latent along x, second half along y (StyleGAN2: of w, in W "
                        "by default); classes: from class --from to class --to by the label embedding, at fixed "
                        "latents; style-mix (StyleGAN2): the style-mixing figure, column sources along the top, "
                        "row sources down the left, each cell the row source with the --styles of its column's")
    p.add_argument("--space", choices=["z", "w"],
                   help="lerp and grid: interpolate in Z (the latents) or in W (StyleGAN2's mapped styles, then "
                        "the synthesis network); default w for StyleGAN2, z otherwise; slerp is in Z")
    p.add_argument("--styles", choices=["coarse", "middle", "fine"],
                   help="--mode style-mix: the styles taken from the column source: coarse (those acting at "
                        "4x4-8x8, the default), middle (16x16-32x32) or fine (64x64 and up; a model of 32x32 or "
                        "less has none, and there fine means the styles of its last resolution)")
    p.add_argument("--rows", type=int, help="--mode style-mix: row sources (default --pairs)")
    p.add_argument("--cols", type=int, help="--mode style-mix: column sources (default --pairs)")
    p.add_argument("--truncation", type=float, metavar="PSI", help=TRUNCATION_HELP)
    p.add_argument("--steps", type=int, default=8, help="images per row (grid: K for a KxK grid)")
    p.add_argument("--pairs", type=int, default=4, help="rows of lerp/slerp pairs, or of latents for --mode "
                                                        "classes (default 4)")
    p.add_argument("--class", dest="classes", action="append", default=[], metavar="NAME|INDEX",
                   help="conditional runs: interpolate within this class (repeatable: lerp/slerp rows take the "
                        "classes in turn; default: row r is class r)")
    p.add_argument("--from", dest="from_class", metavar="NAME|INDEX", help="--mode classes: the first column's class")
    p.add_argument("--to", dest="to_class", metavar="NAME|INDEX", help="--mode classes: the last column's class")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="a .png grid or a .gif animation along a loop of latents")
    p.add_argument("--no-ema", action="store_true")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=_cmd_interpolate)

    p = sub.add_parser("eval", help="compute metrics on a run's generator or on a folder/zip of images")
    p.add_argument("source", nargs="?", metavar="RUN|FILE", help="a run folder, an exported generator, a "
                                                                 "checkpoint file (RUN/checkpoints/step_N.pt) or "
                                                                 "zoo:NAME")
    p.add_argument("--fake", metavar="SOURCE", help="a folder or zip of generated images (or a .npy file of points) "
                                                    "instead of a generator")
    p.add_argument("--metrics", required=True, help="comma-separated: swd, ms_ssim, fid, kid, is, pr, "
                                                    "fd_fmnist, kid_fmnist, modes")
    p.add_argument("--num-samples", type=int, help="samples per side (default: each metric's protocol)")
    p.add_argument("--real", metavar="SOURCE", help="real samples: a folder or zip of images, a .npy file, a toy "
                                                    "source, or fashion-mnist|mnist[:train|:test] (default: the "
                                                    "run's training data; fd_fmnist of files: fashion-mnist:test)")
    p.add_argument("--out", help="write the metrics as one JSON object to this file")
    p.add_argument("--json", action="store_true", help="print that JSON object instead of the table")
    p.add_argument("--no-ema", action="store_true", help="evaluate the raw generator of a run folder or checkpoint "
                                                         "file instead of its EMA (not added to metrics.jsonl)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--truncation", type=float, metavar="PSI",
                   help=TRUNCATION_HELP + "; recorded as truncation in the JSON, and a truncated result (PSI "
                        "below 1) is not added to the run's metrics.jsonl")
    p.add_argument("--inception-weights", metavar="PATH", help="local Inception weights for offline machines "
                                                               "(pt_inception-2015-12-05-6726825d.pth)")
    p.add_argument("--vgg16-weights", metavar="PATH", help="local VGG16 weights for pr on offline machines "
                                                           "(vgg16-397923af.pth)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("prepare", help="turn raw datasets into a training-ready dataset (data.source: packed)")
    p.add_argument("kind", choices=["celeba", "lsun", "folder", "idx"])
    p.add_argument("src", metavar="SRC", help="img_align_celeba folder/zip, LSUN LMDB folder, image folder/zip, "
                                              "or IDX file")
    p.add_argument("dest", metavar="DEST", help="new folder for the packed dataset")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--limit", type=int, help="at most N images")
    p.add_argument("--crop", default="default", help="celeba: pgan (128x128 box at (89, 121), the default) or "
                                                     "dcgan (shorter side resized, centre square)")
    p.add_argument("--channels", type=int, choices=[1, 3], help="3 (RGB, default) or 1 (grayscale; idx default)")
    p.add_argument("--workers", type=int, help="decoding processes (default: up to 4 for large sources)")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable image")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("report", help="write RUN/report.html: curves, samples over time, metrics")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--png", action="store_true", help="also write the curves as PNG files")
    p.set_defaults(func=_cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except GankitError as err:
        print(f"gankit {args.command}: error: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 2)
    except KeyboardInterrupt:
        print(f"gankit {args.command}: interrupted", file=sys.stderr)
        return 130
