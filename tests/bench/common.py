"""Helpers shared by the benchmarks: scale, timing, peak memory, a sandbox, a spool generator."""

import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "lib"))

SCALE = float(os.environ.get("BENCH_SCALE", "1"))


def scaled(n):
    return max(1, int(n * SCALE))


def timed(func, *args):
    started = time.perf_counter()
    result = func(*args)
    return time.perf_counter() - started, result


def child_peak_rss_mib():
    """Peak RSS of the largest child waited for so far."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def world_readable_tempdir(prefix):
    directory = tempfile.mkdtemp(prefix=prefix)
    os.chmod(directory, 0o755)
    return directory


def sandbox(directory):
    from mailsuite.admin import sandbox as sb
    conf = sb.init(directory)
    for user in sb.DEMO_USERS:
        Path(directory, "spool", user).write_bytes(b"")
    return conf


def generate_spool(path, count, size):
    """An mbox of `count` messages of about `size` bytes, written in big blocks."""
    line = b"The quick brown fox jumps over the lazy dog; lorem ipsum dolor sit amet.\n"
    body = line * max(1, (size - 300) // len(line))
    with open(path, "wb", buffering=8 << 20) as f:
        for i in range(count):
            f.write(b"From sender@example.org Mon Jan  1 00:00:00 2024\n"
                    b"From: Sender <sender@example.org>\nTo: alice@localhost\n"
                    b"Subject: message %d\nMessage-ID: <%d@bench.example>\n"
                    b"Date: Mon, 1 Jan 2024 00:00:00 +0000\n\n" % (i, i))
            f.write(body)
            f.write(b"\n")


def have(program, *extra_paths):
    return shutil.which(program, path=":".join([os.environ.get("PATH", ""), *extra_paths]))
