"""Helpers shared by the benchmarks: scale, sandboxes and spools, the bench user, the programs as installed, a spool watcher.

Every benchmark is a script run by run.py (`make bench`), which passes
BENCH_SCALE, the share of the full-scale work (run.py's default 0.1: a
few minutes on a 2-core machine; `--full` is 1.0).  Runs, medians, ratios
and the JSON results are stats.py's.

Our programs run as `make install` installs them: the system Python
(INSTALL_PYTHON, /usr/bin/python3) started with -IS, byte-compiled, with the
package directory and the system's site directories on sys.path
(`installed_programs`), not through the development venv's interpreter.
"""

import ctypes
import os
import resource
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "lib"))

SCALE = float(os.environ.get("BENCH_SCALE", "0.1"))
INSTALL_PYTHON = os.environ.get("INSTALL_PYTHON", "/usr/bin/python3")
BENCH_USER = "nobody"             # every server and delivery agent of a benchmark runs as this user


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


# --- the user everything runs as --------------------------------------------


def bench_user():
    import pwd
    return pwd.getpwnam(BENCH_USER)


def as_bench_user():
    """subprocess keyword arguments that run a program as BENCH_USER with only its own group (root only)."""
    if os.geteuid() != 0:
        return {}
    user = bench_user()
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def give_to_bench_user(path):
    """Make PATH and everything under it BENCH_USER's (root only)."""
    if os.geteuid() != 0:
        return
    user = bench_user()
    for top, dirs, files in os.walk(path):
        for name in [top] + [os.path.join(top, n) for n in dirs + files]:
            os.lchown(name, user.pw_uid, user.pw_gid)


# --- our programs as installed ----------------------------------------------


def installed_programs(directory):
    """{name: path} of bin/* wrapped as `make install` wraps them, in DIRECTORY, using this checkout's lib/.

    lib/ is byte-compiled first (as root; the programs then run as another
    user who could not write the cache)."""
    subprocess.run([INSTALL_PYTHON, "-m", "compileall", "-q", str(REPO / "lib")], check=True)
    site_dirs = subprocess.run([INSTALL_PYTHON, "-I", "-c", "import site; print(site.getsitepackages())"],
                               check=True, capture_output=True, text=True).stdout.strip()
    os.makedirs(directory, exist_ok=True)
    programs = {}
    for source in sorted((REPO / "bin").iterdir()):
        body = source.read_text().split("\n", 1)[1]
        target = Path(directory, source.name)
        target.write_text(f"#!{INSTALL_PYTHON} -IS\nimport sys; sys.path[:0] = [{str(REPO / 'lib')!r}]; "
                          f"sys.path += {site_dirs}\n{body}")
        target.chmod(0o755)
        programs[source.name] = str(target)
    for alias in ("mailq", "newaliases"):
        link = Path(directory, alias)
        if not link.exists():
            link.symlink_to("sendmail")
        programs[alias] = str(link)
    return programs


# --- "in the mbox": counting appended messages --------------------------------

_IN_MODIFY, _IN_CLOSE_WRITE, _IN_CREATE, _IN_MOVED_TO = 0x2, 0x8, 0x100, 0x80


class MboxCounter:
    """Counts the messages appended to an mbox file, reading only the bytes added since the last look.

    Woken by inotify on the file's directory (the file may not exist yet),
    so waiting costs nothing while nothing is written; a message is
    counted at the `From ` line that starts it (bodies are quoted by every
    delivery agent measured).  Bytes are taken only up to the first NUL: an
    append that extends the file first and then fills it is read again
    once written."""

    def __init__(self, path):
        self.path = str(path)
        self.offset = 0
        self.count = 0
        self._carry = b"\n"              # the start of the file counts as after a line end
        libc = ctypes.CDLL(None, use_errno=True)
        self._fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        mask = _IN_MODIFY | _IN_CLOSE_WRITE | _IN_CREATE | _IN_MOVED_TO
        if libc.inotify_add_watch(self._fd, os.path.dirname(self.path).encode(), mask) < 0:
            raise OSError(ctypes.get_errno(), "inotify_add_watch")
        self._read_new()

    def _read_new(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        hole = data.find(b"\0")         # the space an append reserved (ftruncate) and has not written yet
        if hole >= 0:
            data = data[:hole]
        if not data:
            return
        self.offset += len(data)
        joined = self._carry + data
        self.count += joined.count(b"\nFrom ")
        self._carry = joined[-5:]

    def wait_for(self, total, timeout):
        """Block until COUNT reaches TOTAL; the time.perf_counter() when it did."""
        deadline = time.monotonic() + timeout
        while True:
            self._read_new()
            if self.count >= total:
                return time.perf_counter()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.path}: {self.count} of {total} messages")
            if select.select([self._fd], [], [], min(remaining, 1.0))[0]:
                try:
                    while os.read(self._fd, 65536):
                        pass
                except BlockingIOError:
                    pass

    def close(self):
        os.close(self._fd)


def scrypt_check_seconds(stored):
    """The median time of checking the password "alice" against the hash STORED (what a login spends in scrypt)."""
    from mailsuite.server.passwords import verify_password
    times = []
    for _ in range(7):
        started = time.perf_counter()
        verify_password("alice", stored)
        times.append(time.perf_counter() - started)
    return statistics.median(times)
