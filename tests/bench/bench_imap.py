"""imapd against Dovecot's imap on the same generated spool, same run.

Both servers run one preauthenticated session on stdin/stdout (no network,
no password hashing in the way), on the same mbox file with store headers
already written (the steady state either server leaves behind).  Each run
measures, for each server in turn:

- SELECT cold (no index), warm (index current) and after one new message
  appended to the spool: the SELECT command alone, and with the process
  start before it (what a client of an inetd-started server waits);
- UID FETCH 1:* (FLAGS);
- FETCH 1:* (BODY.PEEK[]): every message body, in MB/s;
- SEARCH on a header (SUBJECT) and on body text;
- the session's peak RSS (VmHWM) after the warm SELECT and at the end.

Figures are the median of BENCH_RUNS runs (3) with min and max.  Default
scale: 100,000 messages, about 1 GiB (BENCH_SCALE scales the count).
Dovecot refuses to serve root, so as root both servers run as `nobody`.
"""

import os
import pwd
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import BIN, generate_spool, have, sandbox, scaled, world_readable_tempdir
from stats import HIGHER, LOWER, RUNS, Figure, Table, peer_version, save

DOVECOT = "/usr/lib/dovecot/imap"
MESSAGE_SIZE = 10_700
RUN_AS = "nobody" if os.geteuid() == 0 else None
NEW_MESSAGE = (b"From new@example.org Mon Jan  1 00:00:00 2024\nFrom: new@example.org\nSubject: new\n"
               b"Message-ID: <new-%d@bench.example>\n\nOne more message.\n\n")


def as_user():
    if not RUN_AS:
        return []
    entry = pwd.getpwnam(RUN_AS)
    return ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups", "--"]


class Session:
    """One server process; commands timed until their tagged reply."""

    def __init__(self, argv, env):
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=env, bufsize=0)
        self.fd = self.proc.stdout.fileno()
        self.counter = 0
        self.read_until(b"\r\n")

    def read_until(self, needle):
        """Bytes read until needle; only the tail is searched, so big FETCHes stay cheap.

        Replies end in CRLF, so new input starts a line: the search begins after a CRLF.
        """
        total, tail = 0, b"\r\n"
        while True:
            select.select([self.fd], [], [])
            chunk = os.read(self.fd, 1 << 20)
            if not chunk:
                raise RuntimeError("server closed the connection")
            total += len(chunk)
            tail = (tail + chunk)[-(len(needle) + 1 << 16):]
            if needle in tail:
                return total, tail

    def command(self, text):
        """(seconds, bytes read) of one command up to its tagged OK."""
        self.counter += 1
        tag = b"Q%dZ" % self.counter
        started = time.perf_counter()
        self.proc.stdin.write(tag + b" " + text.encode() + b"\r\n")
        total, tail = self.read_until(b"\r\n" + tag + b" ")
        tail = tail + (b"" if tail.endswith(b"\r\n") else self.read_until(b"\r\n")[1])
        elapsed = time.perf_counter() - started
        status = tail.split(b"\r\n" + tag + b" ", 1)[1][:2]
        if status != b"OK":
            raise RuntimeError(f"{text}: {tail[-300:]!r}")
        return elapsed, total

    def peak_rss_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def close(self):
        self.proc.stdin.write(b"Z LOGOUT\r\n")
        self.proc.stdin.close()
        self.proc.stdout.read()
        self.proc.wait()


def prepare(count):
    directory = world_readable_tempdir("bench-imap-")
    conf = sandbox(os.path.join(directory, "sb"))
    spool = Path(directory, "sb", "spool", "alice")
    home = Path(directory, "sb", "home", "alice")
    started = time.perf_counter()
    generate_spool(spool, count, MESSAGE_SIZE)
    generated = time.perf_counter() - started
    from mailsuite.core import config
    from mailsuite.store import mailbox as mbox
    cfg = config.load(conf)
    box = mbox.Mailbox(str(spool), cfg)
    started = time.perf_counter()
    with box.locked():
        index = box.sync()
        box.sync(flags={m.uid: ({"O"}, ()) for m in index.messages})
    uids = time.perf_counter() - started
    box.close()
    if RUN_AS:
        entry = pwd.getpwnam(RUN_AS)
        for root, dirs, files in os.walk(directory):
            os.chown(root, entry.pw_uid, entry.pw_gid)
            for name in files:
                os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)
    print(f"spool: {count} messages, {spool.stat().st_size / 2**20:.0f} MiB "
          f"(generated in {generated:.1f}s, store headers written in {uids:.1f}s)", flush=True)
    return directory, conf, spool, home


def ours(conf):
    return as_user() + [str(BIN / "imapd"), "-C", conf, "--preauth", "alice"]


def dovecot_conf(directory, spool, home):
    uid = pwd.getpwnam(RUN_AS).pw_uid if RUN_AS else os.getuid()
    gid = pwd.getpwnam(RUN_AS).pw_gid if RUN_AS else os.getgid()
    index = Path(directory, "dovecot-index")
    path = Path(directory, "dovecot.conf")
    path.write_text(
        f"mail_location = mbox:{home}/mail:INBOX={spool}:INDEX={index}\n"
        f"mbox_write_locks = fcntl dotlock\nssl = no\nlog_path = /dev/null\ninfo_log_path = /dev/null\n"
        f"base_dir = {directory}/dovecot-run\nstate_dir = {directory}/dovecot-state\n"
        f"mail_uid = {uid}\nmail_gid = {gid}\nfirst_valid_uid = 0\nfirst_valid_gid = 0\n"
    )
    return path, index


def append_one(spool, n):
    """A new message at the end of the spool, as a delivery would leave it (no store headers yet)."""
    with open(spool, "ab") as f:
        f.write(NEW_MESSAGE % n)


def measure(argv, env, forget_index, spool, run):
    """One run on one server: {figure: value}."""
    results = {}
    forget_index()
    for label in ("cold", "warm", "after_new"):
        if label == "after_new":
            append_one(spool, run)
        session = Session(argv, env)
        results[f"select_{label}"], _ = session.command("SELECT INBOX")
        results[f"select_{label}_total"] = time.perf_counter() - session.started
        if label != "after_new":
            session.close()
    results["rss_select_mib"] = session.peak_rss_mib()
    results["uid_fetch_flags"], _ = session.command("UID FETCH 1:* (FLAGS)")
    elapsed, octets = session.command("FETCH 1:* (BODY.PEEK[])")
    results["fetch_bodies_mb_s"] = octets / elapsed / 1e6
    results["search_header"], _ = session.command('SEARCH SUBJECT "message 4242"')
    results["search_body"], _ = session.command("SEARCH BODY zebra")
    results["rss_peak_mib"] = session.peak_rss_mib()
    session.close()
    return results


ROWS = (
    ("SELECT cold (command)", "ms", "select_cold", LOWER, 1000),
    ("SELECT cold (process start + command)", "ms", "select_cold_total", LOWER, 1000),
    ("SELECT warm (command)", "ms", "select_warm", LOWER, 1000),
    ("SELECT warm (process start + command)", "ms", "select_warm_total", LOWER, 1000),
    ("SELECT after one new message (command)", "ms", "select_after_new", LOWER, 1000),
    ("SELECT after one new (start + command)", "ms", "select_after_new_total", LOWER, 1000),
    ("UID FETCH 1:* (FLAGS)", "ms", "uid_fetch_flags", LOWER, 1000),
    ("FETCH 1:* (BODY.PEEK[])", "MB/s", "fetch_bodies_mb_s", HIGHER, 1),
    ("SEARCH SUBJECT", "ms", "search_header", LOWER, 1000),
    ("SEARCH BODY", "ms", "search_body", LOWER, 1000),
    ("peak RSS after SELECT", "MiB", "rss_select_mib", LOWER, 1),
    ("peak RSS at the end", "MiB", "rss_peak_mib", LOWER, 1),
)


def main():
    if not os.path.exists(DOVECOT):
        print("dovecot-imapd is not installed; nothing to compare with")
        return 0
    if RUN_AS and not have("setpriv"):
        print("setpriv is needed to run both servers as nobody")
        return 0
    count = scaled(100_000)
    directory, conf, spool, home = prepare(count)
    # byte-compiled as an installed package would be (the first run writes the cache)
    env = dict(os.environ, MAILSUITE_CONFIG=conf, USER="alice", HOME=str(home),
               PYTHONPYCACHEPREFIX=str(Path(directory, "pycache")))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run(ours(conf), input=b"a LOGOUT\r\n", env=env, stdout=subprocess.DEVNULL, check=True)
    cache_dir = Path(home, ".cache", "mailsuite")
    dconf, dindex = dovecot_conf(directory, spool, home)
    mine, theirs = {}, {}
    try:
        for run in range(RUNS):
            for figures, argv, forget in (
                    (mine, ours(conf), lambda: shutil.rmtree(cache_dir, ignore_errors=True)),
                    (theirs, as_user() + [DOVECOT, "-c", str(dconf)], lambda: shutil.rmtree(dindex, ignore_errors=True))):
                for key, value in measure(argv, env, forget, spool, 2 * run + (figures is theirs)).items():
                    figures.setdefault(key, Figure()).add(value)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    table = Table(f"IMAP, {count} messages of {MESSAGE_SIZE} bytes", "Dovecot")
    for work, unit, key, better, scale in ROWS:
        table.row(work, unit, mine[key], theirs[key], better, scale)
    save("imap", [table], count=count, dovecot=peer_version(["dovecot", "--version"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
