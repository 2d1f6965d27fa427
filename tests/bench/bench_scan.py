"""Index scan of a 1 GiB, 100,000-message spool against a plain read of the same file.

The plain sequential read (1 MiB chunks, what `cat` does) is the ceiling:
a scan cannot be faster than reading the bytes.  Each scan runs in its own
process so its peak RSS is its own.  Lines: the full scan with no index
cache, the scan with a current cache, and the re-scan after one more
message was appended (only the tail is read).
"""

import os
import shutil
import subprocess
import sys
import time

from common import REPO, generate_spool, scaled, world_readable_tempdir

COUNT = scaled(100_000)
SIZE = 10_700

SCAN = """
import os, resource, sys, time
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
print(len(index.messages), elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""

READ = """
import os, resource, sys, time
started = time.perf_counter()
fd = os.open({spool!r}, os.O_RDONLY)
total = 0
while chunk := os.read(fd, 1 << 20):
    total += len(chunk)
print(total, time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def run(template, **values):
    out = subprocess.run([sys.executable, "-c", template.format(**values)], capture_output=True, text=True, check=True)
    a, b, c = out.stdout.split()
    return int(a), float(b), float(c)


def main():
    top = world_readable_tempdir("mailsuite-scan-")
    try:
        spool = os.path.join(top, "spool")
        home = os.path.join(top, "home")
        os.mkdir(home)
        conf = os.path.join(top, "mailsuite.conf")
        with open(conf, "w") as f:
            f.write(f"[mailsuite]\nindex_dir = {home}/cache\n")
        started = time.perf_counter()
        generate_spool(spool, COUNT, SIZE)
        size = os.path.getsize(spool)
        print(f"spool: {COUNT} messages, {size / 2**20:.0f} MiB (written in {time.perf_counter() - started:.1f} s)")
        values = dict(lib=str(REPO / "lib"), conf=conf, home=home, spool=spool)
        total, read_s, read_rss = run(READ, spool=spool)
        print(f"{'sequential read (ceiling)':30} {read_s:7.2f} s  {size / 2**20 / read_s:7.0f} MiB/s  peak RSS {read_rss:5.0f} MiB")
        n, scan_s, scan_rss = run(SCAN, cached=False, **values)
        assert n == COUNT, n
        print(f"{'scan, no cache':30} {scan_s:7.2f} s  {size / 2**20 / scan_s:7.0f} MiB/s  peak RSS {scan_rss:5.0f} MiB"
              f"  ({read_s / scan_s:.2f} of the ceiling)")
        run(SCAN, cached=True, **values)                    # fills the cache
        n, warm_s, warm_rss = run(SCAN, cached=True, **values)
        print(f"{'scan, current cache':30} {warm_s:7.2f} s  {'':12}  peak RSS {warm_rss:5.0f} MiB")
        with open(spool, "ab") as f:
            f.write(b"\nFrom new@example.org Mon Jan  1 00:00:00 2024\nSubject: new\n\nnew\n")
        n, tail_s, tail_rss = run(SCAN, cached=True, **values)
        assert n == COUNT + 1
        print(f"{'scan after one append':30} {tail_s:7.2f} s  {'':12}  peak RSS {tail_rss:5.0f} MiB")
    finally:
        shutil.rmtree(top)


if __name__ == "__main__":
    sys.exit(main())
