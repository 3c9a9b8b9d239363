"""Time and peak memory of gankit's SWD and MS-SSIM against the straightforward NumPy versions.

Each (metric, implementation) runs in its own subprocess on the same seeded random uint8 images, so
that every peak RSS (ru_maxrss) belongs to one computation. Printed: wall and CPU seconds, peak RSS,
the RSS growth during the call, the metric values (which must agree) and the NumPy / gankit ratios.

    .venv/bin/python benchmarks/metrics_speed.py                      # defaults: a few minutes on 2 cores
    .venv/bin/python benchmarks/metrics_speed.py --num-images 2048 --resolution 128
    .venv/bin/python benchmarks/metrics_speed.py --memory-check       # gankit's SWD on 16,384 x 128 x 128 RGB

--memory-check follows an evaluation at the paper's scale: the real images go through
`real_descriptor_cache` (the images written to a cache file, their descriptors to a scratch file,
images freed), a second call is timed as the cache hit of a later evaluation, then SWD runs against
16,384 generated images held in memory. It needs ~10 GB of free disk in the temporary directory.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The NumPy versions are the tests' oracles and live with them, outside the package (tests/numpy_reference.py).
# Appended, not prepended, so that nothing in tests/ can shadow an installed module.
sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))

MIB = 2**20


def rss_now_mib() -> float:
    """Current resident set size (Linux /proc; falls back to the peak elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mib()


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def random_images(count: int, channels: int, resolution: int, seed: int):
    import numpy as np

    return np.random.RandomState(seed).randint(0, 256, size=(count, channels, resolution, resolution), dtype=np.uint8)


def run_child(metric: str, implementation: str, args) -> dict:
    """Runs one measurement in this process and returns its record."""
    import numpy as np
    import torch

    import numpy_reference
    from gankit.metrics import ms_ssim, swd

    if metric == "swd":
        real = random_images(args.num_images, args.channels, args.resolution, seed=1)
        fake = random_images(args.num_images, args.channels, args.resolution, seed=2)
        if implementation == "gankit":
            call = lambda: swd.sliced_wasserstein(torch.from_numpy(real), torch.from_numpy(fake))["avg"]  # noqa: E731
        else:
            call = lambda: numpy_reference.sliced_wasserstein(real, fake)["avg"]  # noqa: E731
    else:
        images = random_images(2 * args.pairs, args.channels, args.resolution, seed=3)
        # Correlated pairs (odd images = even images + noise) give values away from 0.
        noise = np.random.RandomState(4).randint(-40, 41, size=images[1::2].shape)
        images[1::2] = np.clip(images[0::2].astype(np.int16) + noise, 0, 255).astype(np.uint8)
        if implementation == "gankit":
            call = lambda: ms_ssim.ms_ssim_pairs(torch.from_numpy(images), args.pairs)  # noqa: E731
        else:
            call = lambda: numpy_reference.ms_ssim_pairs(images, args.pairs)  # noqa: E731
    rss_before = rss_now_mib()
    wall, cpu = time.perf_counter(), time.process_time()
    value = call()
    return {
        "value": value,
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu,
        "peak_rss_mib": peak_rss_mib(),
        "growth_mib": peak_rss_mib() - rss_before,
    }


def run_memory_check(args) -> dict:
    """gankit's SWD on 16,384 real and generated images at 128 x 128 RGB, real side cached on disk."""
    import torch

    from gankit.metrics import swd

    count, resolution = args.memory_check_images, 128
    with tempfile.TemporaryDirectory(dir=args.scratch_dir) as scratch:
        cache_path = Path(scratch) / "swd_real.safetensors"
        wall, cpu = time.perf_counter(), time.process_time()
        reference = swd.real_descriptor_cache(
            lambda: torch.from_numpy(random_images(count, 3, resolution, seed=1)),
            cache_path,
            key=f"random:{resolution}px:{count}",
            scratch_dir=scratch,
        )
        cache_wall, cache_cpu, cache_peak = time.perf_counter() - wall, time.process_time() - cpu, peak_rss_mib()
        del reference  # and its scratch descriptor file, as at the end of an evaluation process

        def cache_miss():
            raise RuntimeError("the cache hit loaded the real images")

        hit_wall, hit_cpu = time.perf_counter(), time.process_time()
        reference = swd.real_descriptor_cache(
            cache_miss, cache_path, key=f"random:{resolution}px:{count}", scratch_dir=scratch
        )
        hit_wall, hit_cpu = time.perf_counter() - hit_wall, time.process_time() - hit_cpu
        fake = torch.from_numpy(random_images(count, 3, resolution, seed=2))
        swd_wall, swd_cpu = time.perf_counter(), time.process_time()
        distances = swd.sliced_wasserstein(reference, fake, scratch_dir=scratch)
        return {
            "images": count,
            "resolution": resolution,
            "cache_bytes": cache_path.stat().st_size,
            "cache_wall_s": cache_wall,
            "cache_cpu_s": cache_cpu,
            "peak_rss_after_cache_mib": cache_peak,
            "cache_hit_wall_s": hit_wall,
            "cache_hit_cpu_s": hit_cpu,
            "distance_wall_s": time.perf_counter() - swd_wall,
            "distance_cpu_s": time.process_time() - swd_cpu,
            "wall_s": time.perf_counter() - wall,
            "cpu_s": time.process_time() - cpu,
            "peak_rss_mib": peak_rss_mib(),
            "swd": distances,
        }


def spawn(extra: list[str]) -> dict:
    """Runs this script as a child with `extra` arguments; returns the JSON it prints."""
    completed = subprocess.run([sys.executable, __file__, *extra], capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"child {extra} failed:\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-images", type=int, default=1024, help="SWD: images per set (default 1024)")
    parser.add_argument("--pairs", type=int, default=1000, help="MS-SSIM: image pairs (default 1000)")
    parser.add_argument("--resolution", type=int, default=64, help="image side in px (default 64)")
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--metrics", default="swd,ms_ssim", help="comma-separated: swd, ms_ssim")
    parser.add_argument("--memory-check", action="store_true", help="only gankit's SWD at 16,384 x 128 x 128 RGB")
    parser.add_argument("--memory-check-images", type=int, default=16384, help=argparse.SUPPRESS)
    parser.add_argument("--scratch-dir", default=None, help="where descriptor files go (default: system temp)")
    parser.add_argument("--child", nargs=2, metavar=("METRIC", "IMPL"), help=argparse.SUPPRESS)
    parser.add_argument("--child-memory-check", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(run_child(*args.child, args)))
        return 0
    if args.child_memory_check:
        print(json.dumps(run_memory_check(args)))
        return 0

    common = ["--num-images", str(args.num_images), "--pairs", str(args.pairs),
              "--resolution", str(args.resolution), "--channels", str(args.channels)]
    if args.memory_check:
        extra = ["--child-memory-check", "--memory-check-images", str(args.memory_check_images)]
        if args.scratch_dir:
            extra += ["--scratch-dir", args.scratch_dir]
        record = spawn(extra)
        print(json.dumps(record, indent=2))
        print(f"peak RSS {record['peak_rss_mib'] / 1024:.2f} GiB, {record['wall_s']:.0f} s wall, "
              f"{record['cpu_s']:.0f} s CPU, cache file {record['cache_bytes'] / 2**30:.2f} GiB, "
              f"cache hit {record['cache_hit_wall_s']:.0f} s wall, {record['cache_hit_cpu_s']:.0f} s CPU")
        return 0

    print(f"{'metric':8} {'impl':7} {'wall s':>8} {'CPU s':>8} {'peak MiB':>9} {'growth MiB':>10} {'value':>12}")
    for metric in args.metrics.split(","):
        records = {}
        for implementation in ("gankit", "numpy"):
            record = records[implementation] = spawn(["--child", metric, implementation, *common])
            print(f"{metric:8} {implementation:7} {record['wall_s']:8.2f} {record['cpu_s']:8.2f} "
                  f"{record['peak_rss_mib']:9.0f} {record['growth_mib']:10.0f} {record['value']:12.6f}")
        ours, reference = records["gankit"], records["numpy"]
        relative = abs(ours["value"] - reference["value"]) / abs(reference["value"])
        print(f"{metric:8} ratio numpy/gankit: wall x{reference['wall_s'] / ours['wall_s']:.2f}, "
              f"CPU x{reference['cpu_s'] / ours['cpu_s']:.2f}, peak RSS x{reference['peak_rss_mib'] / ours['peak_rss_mib']:.2f}, "
              f"RSS growth x{reference['growth_mib'] / max(ours['growth_mib'], 1):.2f}; values differ by {relative:.1e} (relative)")
    size = f"{args.resolution}x{args.resolution}x{args.channels}"
    print(f"inputs: SWD {args.num_images} images per set, MS-SSIM {args.pairs} pairs, {size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
