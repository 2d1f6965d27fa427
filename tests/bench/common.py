"""Helpers shared by the benchmarks: scale, runs, figures and their JSON, the programs as installed, a spool watcher.

Every benchmark is a script run by run.py (`make bench`), which passes:

- BENCH_SCALE: the share of the full-scale work (run.py's default 0.1: a
  few minutes on a 2-core machine; `--full` is 1.0);
- BENCH_RUNS: how many times each figure is measured (at least 3); a
  figure is reported as the median, with the minimum and the maximum;
- BENCH_RESULTS: the directory each script writes its figures to as JSON
  (`Figures.write`), which run.py gathers into one file.

Our programs run as `make install` installs them: the system Python
(INSTALL_PYTHON, /usr/bin/python3) started with -I, byte-compiled, with the
package directory on sys.path (`installed_programs`), not through the
development venv's interpreter.
"""

import ctypes
import json
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
RUNS = max(3, int(os.environ.get("BENCH_RUNS", "3")))
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
    os.makedirs(directory, exist_ok=True)
    programs = {}
    for source in sorted((REPO / "bin").iterdir()):
        body = source.read_text().split("\n", 1)[1]
        target = Path(directory, source.name)
        target.write_text(f"#!{INSTALL_PYTHON} -I\nimport sys; sys.path.insert(0, {str(REPO / 'lib')!r})\n{body}")
        target.chmod(0o755)
        programs[source.name] = str(target)
    for alias in ("mailq", "newaliases"):
        link = Path(directory, alias)
        if not link.exists():
            link.symlink_to("sendmail")
        programs[alias] = str(link)
    return programs


# --- figures ----------------------------------------------------------------


def summary(samples):
    """{median, min, max, runs, samples} of a list of numbers."""
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples),
            "runs": len(samples), "samples": samples}


class Figures:
    """What one benchmark measured: named figures per system, and ratios that say which way is better.

    `add(what, system, unit, better, samples)`: BETTER is "higher" (rates)
    or "lower" (times, memory).  `ratio(what, ours, peer)` is always
    oriented so that > 1 means OURS is better (faster, smaller)."""

    def __init__(self, bench, **settings):
        self.bench = bench
        self.settings = settings
        self.figures = {}
        self.ratios = []
        self.notes = []

    def add(self, what, system, unit, better, samples):
        assert better in ("higher", "lower")
        entry = self.figures.setdefault(what, {"unit": unit, "better": better, "systems": {}})
        entry["systems"][system] = summary(list(samples))
        return entry["systems"][system]

    def note(self, text):
        self.notes.append(text)
        print(f"note: {text}", flush=True)

    def ratio(self, what, ours, peer):
        entry = self.figures.get(what)
        if not entry or ours not in entry["systems"] or peer not in entry["systems"]:
            return None
        a, b = entry["systems"][ours]["median"], entry["systems"][peer]["median"]
        value = (a / b) if entry["better"] == "higher" else (b / a)
        meaning = f"> 1 = {ours} is better ({'higher' if entry['better'] == 'higher' else 'lower'} {entry['unit']})"
        self.ratios.append({"what": what, "ours": ours, "peer": peer, "ratio": value, "meaning": meaning})
        return value

    def print_table(self):
        print(f"{'figure':44} {'system':26} {'median':>10} {'min':>10} {'max':>10}  unit")
        for what, entry in self.figures.items():
            for system, s in entry["systems"].items():
                print(f"{what:44} {system:26} {s['median']:10.2f} {s['min']:10.2f} {s['max']:10.2f}  "
                      f"{entry['unit']} ({entry['better']} is better)")
        for r in self.ratios:
            print(f"ratio {r['what']}: {r['ours']} vs {r['peer']}: {r['ratio']:.2f}  ({r['meaning']})")

    def write(self):
        """Into BENCH_RESULTS (run.py's directory for this run), or tests/bench/results/ when run alone."""
        directory = Path(os.environ.get("BENCH_RESULTS") or Path(__file__).parent / "results")
        directory.mkdir(parents=True, exist_ok=True)
        data = {"bench": self.bench, "scale": SCALE, "runs": RUNS, "settings": self.settings,
                "figures": self.figures, "ratios": self.ratios, "notes": self.notes}
        if "BENCH_RESULTS" not in os.environ:
            data["environment"] = environment(directory)
            path = directory / f"{self.bench}-{time.strftime('%Y%m%d-%H%M%S')}.json"
        else:
            path = directory / f"{self.bench}.json"
        path.write_text(json.dumps(data, indent=1) + "\n")
        return path


def environment(where):
    """The machine and the peers the figures were measured against."""
    def output(argv):
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        text = (done.stdout or done.stderr).strip()
        return text.splitlines()[0] if text else None

    fs = output(["stat", "-f", "-c", "%T", str(where)])
    mount = output(["findmnt", "-n", "-o", "SOURCE,FSTYPE,OPTIONS", "--target", tempfile.gettempdir()])
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "kernel": os.uname().release, "machine": os.uname().machine, "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "filesystem": {"results": fs, "temporary files": mount},
        "python": {"programs": output([INSTALL_PYTHON, "--version"]), "harness": sys.version.split()[0]},
        "peers": {
            "postfix": output(["postconf", "-h", "mail_version"]),
            "dovecot": output(["dovecot", "--version"]),
            "procmail": output(["procmail", "-v"]),
            "smtp-source": "from postfix " + (output(["postconf", "-h", "mail_version"]) or "?"),
        },
    }


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

