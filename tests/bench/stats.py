"""Repeated figures for the benchmarks: the median of several runs with their min and max, and fair ratios.

A figure is measured RUNS times (BENCH_RUNS, default 3) for mailsuite and
for the reference program in the same run of the benchmark; a table row
shows each side as `median [min-max]` and a ratio that always reads the
same way: above 1 means mailsuite is better (faster, more throughput, less
memory), whichever way the unit goes.  `save()` keeps the rows as JSON in
BENCH_RESULTS (run.py's directory for this run) or tests/bench/results/,
with the machine, the file system and the peers' versions.
"""

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = max(3, int(os.environ.get("BENCH_RUNS", "3")))
RESULTS = Path(os.environ.get("BENCH_RESULTS") or Path(__file__).resolve().parent / "results")
INSTALL_PYTHON = os.environ.get("INSTALL_PYTHON", "/usr/bin/python3")

LOWER = "lower"    # times, memory: less is better
HIGHER = "higher"  # throughput: more is better


class Figure:
    """The values of one measurement over several runs."""

    def __init__(self, values=()):
        self.values = [v for v in values if v is not None]

    def add(self, value):
        if value is not None:
            self.values.append(value)

    @property
    def median(self):
        return statistics.median(self.values) if self.values else None

    def text(self, scale=1.0, digits=1):
        if not self.values:
            return "-"
        lo, mid, hi = min(self.values) * scale, self.median * scale, max(self.values) * scale
        if len(self.values) == 1:
            return f"{mid:.{digits}f}"
        return f"{mid:.{digits}f} [{lo:.{digits}f}-{hi:.{digits}f}]"


def ratio(ours, theirs, better):
    """Above 1: mailsuite is better.  Times and memory: theirs / ours; throughput: ours / theirs."""
    a, b = ours.median, theirs.median
    if not a or not b:
        return None
    return b / a if better == LOWER else a / b


class Table:
    """Rows of `work | mailsuite | peer | ratio`, printed as they come and kept for save()."""

    def __init__(self, title, peer):
        self.title = title
        self.peer = peer
        self.rows = []
        print(f"{title}: median [min-max] of {RUNS} runs; ratio > 1 means mailsuite is better", flush=True)
        print(f"  {'work':38} {'unit':5} {'mailsuite':>24} {peer:>24} {'ratio':>6}", flush=True)

    def row(self, work, unit, ours, theirs=None, better=LOWER, scale=1.0, digits=1):
        theirs = theirs or Figure()
        r = ratio(ours, theirs, better)
        self.rows.append({"work": work, "unit": unit, "better": better, "mailsuite": [v * scale for v in ours.values],
                          self.peer: [v * scale for v in theirs.values], "ratio": r,
                          "meaning": f"> 1 = mailsuite is better ({better} {unit})"})
        print(f"  {work:38} {unit:5} {ours.text(scale, digits):>24} {theirs.text(scale, digits):>24} "
              f"{'' if r is None else f'{r:.2f}':>6}", flush=True)


def collect(measure, runs=RUNS):
    """{key: Figure} from RUNS calls of MEASURE(), each returning {key: value}."""
    figures = {}
    for _ in range(runs):
        for key, value in measure().items():
            figures.setdefault(key, Figure()).add(value)
    return figures


def save(name, tables, notes=(), **facts):
    """Write the tables to RESULTS/NAME.json with the machine, the peers' versions (FACTS) and NOTES."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "runs": RUNS,
            "scale": float(os.environ.get("BENCH_SCALE", "1")), "machine": machine(), **facts,
            "notes": list(notes), "tables": [{"title": t.title, "peer": t.peer, "rows": t.rows} for t in tables]}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def machine():
    """The kernel, the CPUs, the Pythons and the file systems the figures were measured on."""
    return {"kernel": platform.release(), "arch": platform.machine(), "cpus": os.cpu_count(),
            "load": os.getloadavg()[0],
            "python": {"programs": peer_version([INSTALL_PYTHON, "--version"]), "harness": platform.python_version()},
            "filesystem": {"temporary files": _output(["findmnt", "-n", "-o", "SOURCE,FSTYPE,OPTIONS", "--target",
                                                        tempfile.gettempdir()]),
                           "results": _output(["stat", "-f", "-c", "%T", str(RESULTS.parent)])}}


def peers():
    """The versions of every reference program the benchmarks measure against (None: not installed)."""
    postfix = peer_version(["postconf", "-h", "mail_version"])
    return {"postfix": postfix, "smtp-source": postfix and f"from postfix {postfix}",
            "dovecot": peer_version(["dovecot", "--version"]), "procmail": peer_version(["procmail", "-v"])}


def peer_version(argv):
    """The first line a program prints for its version, or None."""
    return _output(argv)


def _output(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def note(text):
    """Print a remark about the run (a peer skipped, ...) and return it for save(notes=...)."""
    print(f"note: {text}", file=sys.stderr, flush=True)
    return text


def memory_kib(pid):
    """(RSS, PSS, USS) of a process in KiB, from smaps_rollup; zeros when it is gone.

    PSS counts each page shared with N processes as 1/N of it; USS counts
    only the pages no other process has (what ending the process frees).
    """
    found = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in ("Rss", "Pss", "Private_Clean", "Private_Dirty"):
                    found[name] = int(rest.split()[0])
    except (OSError, ValueError):
        pass
    return found.get("Rss", 0), found.get("Pss", 0), found.get("Private_Clean", 0) + found.get("Private_Dirty", 0)
