"""pop3d against Dovecot's pop3 on copies of the same generated spool, same run.

Both servers run one session per process on pipes (pop3d in inetd mode,
Dovecot's pop3 binary pre-authenticated with an on-disk index), so the
figures are the servers' own work, not the network's.  Each run starts
both from a fresh copy of the spool and measures, per server:
login+STAT on the fresh spool (both assign UIDs: the first session ever),
login+STAT again (warm: index caches current), LIST, UIDL, RETR of every
message (MB/s of wire bytes), QUIT (every message marked read and written
back), login+STAT after that, and the peak RSS of the session process.

pop3d's login checks its scrypt password; Dovecot's pre-authenticated one
checks none.  The check's own cost is measured in the same run and shown
apart, and the login+STAT rows are given with it taken out too.  Figures
are the median of BENCH_RUNS runs (3) with min and max.
"""

import os
import pwd
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import BIN, generate_spool, sandbox, scaled, scrypt_check_seconds, world_readable_tempdir
from stats import HIGHER, LOWER, RUNS, Figure, Table, peer_version, save

COUNT = scaled(100_000)
SIZE = 10_700
DOVECOT_POP3 = "/usr/lib/dovecot/pop3"


class Session:
    """One server process on pipes; replies read in big chunks."""

    def __init__(self, argv, env, greeting=True):
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=env, bufsize=0)
        self.buf = b""
        if greeting:
            self.line()

    def send(self, data):
        self.proc.stdin.write(data)

    def _more(self):
        chunk = self.proc.stdout.read(1 << 20)
        if not chunk:
            raise EOFError("server closed")
        self.buf += chunk

    def line(self):
        while b"\r\n" not in self.buf:
            self._more()
        line, self.buf = self.buf.split(b"\r\n", 1)
        if not line.startswith(b"+OK"):
            raise RuntimeError(line.decode(errors="replace"))
        return line

    def multiline(self):
        """Read the rest of a multi-line reply; returns its length in bytes."""
        if self.buf.startswith(b".\r\n"):
            self.buf = self.buf[3:]
            return 3
        total = 0
        while (end := self.buf.find(b"\r\n.\r\n")) < 0:
            keep = min(len(self.buf), 4)
            total += len(self.buf) - keep
            self.buf = self.buf[len(self.buf) - keep:]
            self._more()
        total += end + 5
        self.buf = self.buf[end + 5:]
        return total

    def close(self):
        self.send(b"QUIT\r\n")
        started = time.perf_counter()
        self.line()
        quit_time = time.perf_counter() - started
        self.proc.stdin.close()
        _, _, usage = os.wait4(self.proc.pid, 0)
        self.proc.stdout.close()
        return quit_time, usage.ru_maxrss / 1024


def login_stat(open_session):
    session = open_session()
    session.send(b"STAT\r\n")
    count = int(session.line().split()[1])
    return session, time.perf_counter() - session.started, count


def measure(open_session):
    """One run on one server: {figure: value}."""
    first, first_time, count = login_stat(open_session)
    first.close()
    session, warm_time, _ = login_stat(open_session)
    results = {"login_stat_first": first_time, "login_stat_warm": warm_time}
    for command in (b"LIST", b"UIDL"):
        started = time.perf_counter()
        session.send(command + b"\r\n")
        session.line()
        session.multiline()
        results[command.decode().lower()] = time.perf_counter() - started
    started = time.perf_counter()
    writer = threading.Thread(target=session.send, args=(b"".join(b"RETR %d\r\n" % n
                                                                 for n in range(1, count + 1)),))
    writer.start()
    wire = 0
    for _ in range(count):
        session.line()
        wire += session.multiline()
    writer.join()
    results["retr_mb_s"] = wire / (time.perf_counter() - started) / 1e6
    results["quit"], results["rss_mib"] = session.close()
    again, results["login_stat_after_quit"], _ = login_stat(open_session)
    again.close()
    return results


def ours(directory):
    conf = sandbox(directory)
    with open(conf, "a") as f:
        f.write("\n[auth]\nfailure_delay = 0\n")
    env = dict(os.environ, MAILSUITE_CONFIG=conf)

    def open_session():
        session = Session([str(BIN / "pop3d"), "-C", conf], env)
        session.send(b"USER alice\r\nPASS alice\r\n")
        session.line()
        session.line()
        return session
    return Path(directory, "spool", "alice"), Path(directory, "home", "alice", ".cache"), open_session


def dovecot(directory):
    home = Path(directory)
    root = os.geteuid() == 0
    account = pwd.getpwnam("nobody") if root else pwd.getpwuid(os.getuid())
    (home / "mail").mkdir()
    index = home / "index"
    spool = home / "alice.mbox"
    (home / "dovecot.conf").write_text(
        f"log_path = /dev/null\nssl = no\n"
        f"mail_location = mbox:{home}/mail:INBOX={spool}:INDEX={index}\n"
        f"pop3_uidl_format = %08Xu%08Xv\nmbox_write_locks = fcntl dotlock\n"
        f"mail_uid = {account.pw_uid}\nmail_gid = {account.pw_gid}\nfirst_valid_uid = 0\nfirst_valid_gid = 0\n")
    env = {"USER": "alice", "HOME": str(home), "PATH": os.environ.get("PATH", "")}

    def open_session():
        return Session([DOVECOT_POP3, "-c", str(home / "dovecot.conf")], env, greeting=False)

    def own():
        index.mkdir(exist_ok=True)
        if root:
            for path in (home, home / "mail", index, spool):
                os.chown(path, account.pw_uid, account.pw_gid)
    return spool, index, open_session, own


def password_check_ms():
    """What pop3d's login spends in scrypt: the median of several checks of the sandbox's own hash."""
    from mailsuite.server.passwords import hash_password
    return scrypt_check_seconds(hash_password("alice"))


ROWS = (
    ("login+STAT, first session (UIDs given)", "ms", "login_stat_first", LOWER, 1000),
    ("login+STAT warm", "ms", "login_stat_warm", LOWER, 1000),
    ("login+STAT warm, password check taken out", "ms", "login_stat_warm_work", LOWER, 1000),
    ("LIST", "ms", "list", LOWER, 1000),
    ("UIDL", "ms", "uidl", LOWER, 1000),
    ("RETR every message", "MB/s", "retr_mb_s", HIGHER, 1),
    ("QUIT (all marked read, written back)", "ms", "quit", LOWER, 1000),
    ("login+STAT after that QUIT", "ms", "login_stat_after_quit", LOWER, 1000),
    ("peak RSS", "MiB", "rss_mib", LOWER, 1),
)


def main():
    if not os.access(DOVECOT_POP3, os.X_OK):
        print("Dovecot's pop3 is not installed: no reference figures")
        return 0
    top = world_readable_tempdir("mailsuite-bench-pop3-")
    mine, theirs = {}, {}
    try:
        master = Path(top, "master.mbox")
        generate_spool(master, COUNT, SIZE)
        print(f"spool: {COUNT} messages, {master.stat().st_size / 2**20:.0f} MiB", flush=True)
        spool, cache, open_ours = ours(os.path.join(top, "sandbox"))
        dovecot_home = os.path.join(top, "dovecot")
        os.mkdir(dovecot_home)
        os.chmod(dovecot_home, 0o755)
        dovecot_spool, dovecot_index, open_dovecot, own = dovecot(dovecot_home)
        check = Figure()
        for _ in range(RUNS):
            shutil.copyfile(master, dovecot_spool)
            shutil.rmtree(dovecot_index, ignore_errors=True)
            own()
            for key, value in measure(open_dovecot).items():
                theirs.setdefault(key, Figure()).add(value)
            shutil.copyfile(master, spool)
            shutil.rmtree(cache, ignore_errors=True)
            cost = password_check_ms()
            check.add(cost)
            result = measure(open_ours)
            result["login_stat_warm_work"] = result["login_stat_warm"] - cost
            for key, value in result.items():
                mine.setdefault(key, Figure()).add(value)
        theirs["login_stat_warm_work"] = theirs["login_stat_warm"]
    finally:
        shutil.rmtree(top)
    table = Table(f"POP3, {COUNT} messages of {SIZE} bytes", "Dovecot")
    for work, unit, key, better, scale in ROWS:
        table.row(work, unit, mine[key], theirs[key], better, scale)
    print(f"  pop3d's scrypt password check: {check.text(1000)} ms (Dovecot's pre-authenticated session has none)")
    save("pop3", [table], count=COUNT, password_check_s=check.values,
         dovecot=peer_version(["dovecot", "--version"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
