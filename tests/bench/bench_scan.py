"""Index scan of a 1 GiB, 100,000-message spool against a plain read of the same file.

The plain sequential read (1 MiB chunks, what `cat` does) is the ceiling:
a scan cannot be faster than reading the bytes.  Each scan runs in its own
process so its peak RSS is its own.  The spool is first given its UIDs,
as the first IMAP or POP3 session does (a scan that finds messages without
UIDs is not kept in the cache: the next reader gives them out).  Lines:
the full scan with no index cache, the scan with a current cache, and the re-scan after one more
message was appended (only the tail is read); then the same scans on a
tenth of the messages, which shows what memory grows with the mailbox
(the goal is none).  Figures are the median of BENCH_RUNS runs (3) with
min and max.
"""

import os
import shutil
import subprocess
import sys
import time

from common import REPO, generate_spool, scaled, world_readable_tempdir
from stats import HIGHER, LOWER, RUNS, Figure, Table, save

COUNT = scaled(100_000)
SIZE = 10_700

SCAN = """
import os, sys, time
{peak}
sys.path.insert(0, {lib!r})
from mailsuite.core import config
from mailsuite.store.mailbox import Mailbox
from mailsuite.core.users import User
cfg = config.load({conf!r})
owner = User("bench", os.getuid(), os.getgid(), {home!r}, "", {spool!r})
started = time.perf_counter()
box = Mailbox({spool!r}, cfg, owner=owner if {cached} else None)
index = box.scan()
elapsed = time.perf_counter() - started
print(len(index.messages), elapsed, peak_rss_mib())
"""

GIVE_UIDS = """
import os, sys
sys.path.insert(0, {lib!r})
from mailsuite.core import config
from mailsuite.store.mailbox import Mailbox
cfg = config.load({conf!r})
box = Mailbox({spool!r}, cfg)
with box.locked():
    box.sync()
print(0, 0, 0)
"""

READ = """
import os, sys, time
{peak}
started = time.perf_counter()
fd = os.open({spool!r}, os.O_RDONLY)
total = 0
while chunk := os.read(fd, 1 << 20):
    total += len(chunk)
print(total, time.perf_counter() - started, peak_rss_mib())
"""

# VmHWM, not getrusage: ru_maxrss counts the parent's pages while a vfork()ed child had them
PEAK = """
def peak_rss_mib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
"""
NEW = b"\nFrom new@example.org Mon Jan  1 00:00:00 2024\nSubject: new\n\nnew\n"


def run(template, **values):
    out = subprocess.run([sys.executable, "-c", template.format(peak=PEAK, **values)], capture_output=True, text=True, check=True)
    a, b, c = out.stdout.split()
    return int(a), float(b), float(c)


def scans(top, count):
    """{figure: value} of one run on a fresh spool of COUNT messages."""
    spool = os.path.join(top, f"spool-{count}")
    home = os.path.join(top, f"home-{count}")
    shutil.rmtree(home, ignore_errors=True)
    os.mkdir(home)
    conf = os.path.join(top, f"mailsuite-{count}.conf")
    with open(conf, "w") as f:
        f.write(f"[mailsuite]\nindex_dir = {home}/cache\n")
    values = dict(lib=str(REPO / "lib"), conf=conf, home=home, spool=spool)
    if not os.path.exists(spool):
        generate_spool(spool, count, SIZE)
        run(GIVE_UIDS, **values)
    out = {}
    _, out["read_s"], out["read_rss"] = run(READ, spool=spool)
    out["size_mib"] = os.path.getsize(spool) / 2**20
    n, out["cold_s"], out["cold_rss"] = run(SCAN, cached=False, **values)
    assert n == count, n
    run(SCAN, cached=True, **values)                    # fills the cache
    n, out["warm_s"], out["warm_rss"] = run(SCAN, cached=True, **values)
    with open(spool, "r+b") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        f.write(NEW)
    n, out["tail_s"], out["tail_rss"] = run(SCAN, cached=True, **values)
    assert n == count + 1
    os.truncate(spool, end)
    return out


def main():
    top = world_readable_tempdir("mailsuite-scan-")
    big, small = {}, {}
    try:
        started = time.perf_counter()
        for _ in range(RUNS):
            for figures, count in ((big, COUNT), (small, max(COUNT // 10, 1))):
                for key, value in scans(top, count).items():
                    figures.setdefault(key, Figure()).add(value)
        print(f"({time.perf_counter() - started:.0f} s in all)")
    finally:
        shutil.rmtree(top)
    size = big["size_mib"].median
    table = Table(f"index scan, {COUNT} messages, {size:.0f} MiB (plain read is the ceiling)", "plain read")
    table.row("scan, no cache", "s", big["cold_s"], big["read_s"], LOWER, digits=3)
    throughput = Figure(size / v for v in big["cold_s"].values)
    table.row("scan, no cache", "MiB/s", throughput, Figure(size / v for v in big["read_s"].values), HIGHER, digits=0)
    table.row("scan, current cache", "s", big["warm_s"], None, LOWER, digits=3)
    table.row("scan after one append", "s", big["tail_s"], None, LOWER, digits=3)
    for label, key in (("no cache", "cold_rss"), ("current cache", "warm_rss"), ("after one append", "tail_rss")):
        table.row(f"peak RSS, {label}", "MiB", big[key], big["read_rss"], LOWER)
        table.row(f"  same, {COUNT // 10} messages", "MiB", small[key], small["read_rss"], LOWER)
        grown = Figure(max(b - s, 0) * 2**20 / (COUNT - COUNT // 10) for b, s in zip(big[key].values, small[key].values))
        table.row("  growth per message", "bytes", grown, None, LOWER, digits=0)
    save("scan", [table], count=COUNT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
