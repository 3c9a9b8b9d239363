"""Turns a pytest JUnit XML report into the reliability table of docs/reliability.md.

    .venv/bin/python -m pytest tests/test_kill_resume.py tests/test_faults.py tests/test_config_fuzz.py \
        tests/test_run_lock.py tests/test_checkpoint_files.py -o junit_family=xunit1 --junitxml=/tmp/reliability.xml
    .venv/bin/python tests/reliability_table.py /tmp/reliability.xml

Tests that measure a fault record it with `record_property("reliability", json)` holding the issue's
point, the fault, how many times it was tried and the outcome they observed; the table prints those,
with the test's pass/fail status. Tests of other files given with `--point FILE=N` (by default the
hostile-file tests, point 4) appear as one row per test function, the cases counted from the report.
"""

from __future__ import annotations

import argparse
import json
import re
import xml.etree.ElementTree as ET
from collections import defaultdict


def status_of(case: ET.Element) -> str:
    for tag, status in (("failure", "FAILED"), ("error", "ERROR"), ("skipped", "skipped")):
        if case.find(tag) is not None:
            return status
    return "passed"


# What each listed test asserts, for tests that do not record their own row (written from their asserts;
# a test missing here gets a generic line).
OUTCOMES = {
    "test_pickle_that_runs_code_is_refused":
        "exit 2, 'cannot be loaded safely'; the marker file the pickle would create does not exist",
    "test_generator_json_with_huge_sizes_is_refused_without_allocating":
        "exit 2, 'does not match generator.json', checked on the meta device before any allocation; no output",
    "test_generator_json_with_invalid_values_is_refused":
        "negative z_dim, 10^9 channels, unknown arch: exit 2, 'invalid generator' naming the field",
    "test_safetensors_with_wrong_contents_is_refused":
        "wrong shape, wrong dtype, missing tensor, garbage bytes: exit 2 naming the file, no traceback",
    "test_atomic_write_keeps_the_old_file_on_failure":
        "a write failing half-way (ENOSPC) leaves the old file byte-identical and no temporary file",
    "test_partial_checkpoint_files_are_never_listed":
        "a leftover .tmp checkpoint is never listed or loaded; the newest complete one is",
    "test_corrupt_image_names_its_file": "a truncated JPEG in a training folder: exit 2 naming broken.jpg",
    "test_empty_folder_and_zip": "an empty folder: 'no images'; a zip with a text file: the text file ignored",
    "test_truncated_idx_is_named": "a truncated IDX file: an error naming the file and 'truncated'",
    "test_changed_bytes_fail_the_checksum": "one flipped byte in a packed file: refused by its checksum",
    "test_truncated_or_mislabelled_files_are_refused":
        "truncated file, bad magic, manifest counts 11 / -3 / '10' and 2 channels: each refused naming the problem",
    "test_broken_lmdb_is_a_clear_error":
        "random bytes as data.mdb, a folder without data.mdb: exit 2, 'cannot open LMDB' / 'no data.mdb', no DEST",
    "test_decoding_any_bytes_never_raises":
        "60 hypothesis draws of random bytes and truncated PNG/GIF/JPEG/WEBP: decoded or skipped, never an exception",
    "test_each_kind_of_bad_file_is_skipped_or_stops_strict_mode":
        "truncated, empty, text, 100k x 100k and 20k x 20k PNG headers, a self-link: skipped and named in the log; "
        "--strict exits 2 naming it and leaves no DEST",
    "test_folder_modes_symlinks_and_damage":
        "grayscale, RGBA, 16-bit, palette, CMYK converted; the bad files, a folder symlink loop, a self-link and "
        "a dangling link skipped; a symlinked folder followed once",
    "test_pixel_limit_is_ours_not_pils": "a 20,000 x 20,000 header PIL would only warn about: refused as a decompression bomb",
    "test_strict_stops_at_the_first_bad_file": "--strict: exit 2 naming the first bad file; no DEST, no temporary folder",
    "test_lsun_lmdb_pixel_for_pixel_and_limit":
        "an LMDB with truncated, empty, random and bomb values: the 4 skipped and logged by key, the good ones "
        "pixel for pixel; --strict stops at the first",
}


def rows_from(report: str, other_points: dict[str, int]) -> list[dict]:
    rows, grouped = [], defaultdict(list)
    for case in ET.parse(report).getroot().iter("testcase"):
        module = case.get("classname", "").split(".")[-1]
        name = case.get("name", "")
        test = f"tests/{module}.py::{name}"
        status = status_of(case)
        for prop in case.iter("property"):
            if prop.get("name") == "reliability":
                rows.append({**json.loads(prop.get("value")), "test": test, "status": status})
        if f"{module}.py" in other_points:
            function = name.split("[")[0]
            grouped[(other_points[f"{module}.py"], module, function)].append(status)
    for (point, module, function), statuses in grouped.items():
        failed = [s for s in statuses if s != "passed"]
        rows.append({"point": point, "fault": re.sub(r"^test ", "", function.replace("_", " ")),
                     "trials": len(statuses), "test": f"tests/{module}.py::{function}",
                     "outcome": OUTCOMES.get(function, "as the test asserts (see its docstring and asserts)"),
                     "status": ", ".join(sorted(set(failed))) if failed else "passed"})
    return sorted(rows, key=lambda r: (int(r["point"]), r["test"]))


def table(rows: list[dict]) -> str:
    lines = ["| issue point | fault | times | outcome | test | result |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        cells = [str(r["point"]), r["fault"], str(r["trials"]), r["outcome"], f"`{r['test']}`", r["status"]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", help="JUnit XML written by pytest --junitxml")
    parser.add_argument("--point", action="append", default=["test_checkpoint_files.py=4"], metavar="FILE=N",
                        help="also list the tests of FILE under issue point N")
    args = parser.parse_args()
    other_points = {f: int(n) for f, n in (item.split("=") for item in args.point)}
    print(table(rows_from(args.report, other_points)))


if __name__ == "__main__":
    main()
