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
                     "outcome": "as the test asserts (see its docstring and asserts)",
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
