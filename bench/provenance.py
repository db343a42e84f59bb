"""Where a benchmark's numbers come from: the commit measured, when, on what machine, by what command.

Every results file in ``bench/results/`` starts with these keys (``tests/test_bench.py`` checks),
so a number in docs/ can be traced to the code and the run that made it.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("benchmark", "commit", "when", "machine", "command")


def commit() -> str:
    """The commit checked out (short hash), with "+changes" when the work tree differs from it
    (results files aside: a benchmark that writes its rows as it goes changes only those)."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    head = git("rev-parse", "--short", "HEAD") or "unknown (no git)"
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)bench/results")
    return head + ("+changes" if changed else "")


def cpu_model() -> str:
    """The processor's name as the kernel reports it (``/proc/cpuinfo``'s "model name", e.g. "AMD EPYC"),
    else ``platform.processor()``; "" when neither says. Two machines both "x86_64, 2 cores" can differ
    several-fold in speed, so results files name it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def provenance(benchmark: str, module: str, argv: list[str] | None = None, machine: str = "") -> dict[str, str]:
    """The keys every results file starts with: ``module`` the benchmark's (``bench.classroom``),
    ``argv`` its arguments (default: this process's), ``machine`` what else to say of the machine
    (torch threads, where the browser ran)."""
    args = sys.argv[1:] if argv is None else argv
    return {
        "benchmark": benchmark,
        "commit": commit(),
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "machine": ", ".join(
            part for part in (platform.machine(), cpu_model(), f"{os.cpu_count()} cores", machine) if part
        ),
        "command": " ".join(["python -m", module, *args]),
    }


def merged_provenance(before: dict[str, Any], here: dict[str, str]) -> dict[str, str]:
    """The file's provenance when this invocation's rows join ``before``'s (a benchmark's ``--merge``): every
    commit and command that made a row, in order ."""
    if not before["rows"]:
        return here

    def joined(key: str, sep: str) -> str:
        seen = list(dict.fromkeys([*before[key].split(sep), here[key]]))
        return sep.join(seen)

    return {**here, "commit": joined("commit", ", "), "command": joined("command", "; then ")}


def write_results(out: str | Path, result: dict) -> Path:
    """Write a results file (``result`` starts with :func:`provenance`'s keys) as indented JSON,
    its folder made if needed; say where. Returns the path."""
    import json

    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return path


def markdown_table(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table: the header ``head``, then one line per row of cells (each ``str()``-ed)."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
