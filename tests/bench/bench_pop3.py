"""pop3d against Dovecot's pop3 on copies of the same generated spool, same run.

Both servers run one session per process on pipes (pop3d in inetd mode,
Dovecot's pop3 binary pre-authenticated with an on-disk index), so the
figures are the servers' own work, not the network's.  Per server:
login+STAT on the fresh spool (both assign UIDs: the first session ever),
login+STAT again (warm: index caches current), LIST, UIDL, RETR of every
message (MB/s of wire bytes), QUIT (flags written back), and the peak RSS
of the session process.  pop3d's login includes its scrypt password check;
Dovecot's pre-authenticated one has none (the check's cost is printed).
"""

import os
import pwd
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import BIN, generate_spool, sandbox, scaled, world_readable_tempdir

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


def measure(name, open_session):
    first, first_time, count = login_stat(open_session)
    first.close()
    session, warm_time, _ = login_stat(open_session)
    timings = {"login+STAT first": first_time, "login+STAT warm": warm_time}
    for command in (b"LIST", b"UIDL"):
        started = time.perf_counter()
        session.send(command + b"\r\n")
        session.line()
        session.multiline()
        timings[command.decode()] = time.perf_counter() - started
    started = time.perf_counter()
    writer = threading.Thread(target=session.send, args=(b"".join(b"RETR %d\r\n" % n
                                                                 for n in range(1, count + 1)),))
    writer.start()
    wire = 0
    for _ in range(count):
        session.line()
        wire += session.multiline()
    writer.join()
    retr_time = time.perf_counter() - started
    timings["QUIT"], rss = session.close()
    again, again_time, _ = login_stat(open_session)
    again.close()
    timings["login+STAT after QUIT"] = again_time
    return {"name": name, "count": count, "timings": timings, "retr": (wire, retr_time), "rss": rss}


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
    return Path(directory, "spool", "alice"), open_session


def dovecot(directory):
    home = Path(directory)
    root = os.geteuid() == 0
    account = pwd.getpwnam("nobody") if root else pwd.getpwuid(os.getuid())
    (home / "mail").mkdir()
    (home / "index").mkdir()
    spool = home / "alice.mbox"
    (home / "dovecot.conf").write_text(
        f"log_path = /dev/null\nssl = no\n"
        f"mail_location = mbox:{home}/mail:INBOX={spool}:INDEX={home}/index\n"
        f"pop3_uidl_format = %08Xu%08Xv\nmbox_write_locks = fcntl\n"
        f"mail_uid = {account.pw_uid}\nmail_gid = {account.pw_gid}\nfirst_valid_uid = 0\nfirst_valid_gid = 0\n")
    env = {"USER": "alice", "HOME": str(home), "PATH": os.environ.get("PATH", "")}

    def open_session():
        return Session([DOVECOT_POP3, "-c", str(home / "dovecot.conf")], env, greeting=False)

    def own():
        if root:
            for path in (home, home / "mail", home / "index", spool):
                os.chown(path, account.pw_uid, account.pw_gid)
    return spool, open_session, own


def report(result):
    wire, seconds = result["retr"]
    print(f"  {result['name']}: {result['count']} messages")
    for label, seconds_ in result["timings"].items():
        print(f"    {label:<24} {seconds_ * 1000:10.1f} ms")
    print(f"    {'RETR all':<24} {seconds * 1000:10.1f} ms  {wire / seconds / 1e6:8.1f} MB/s  ({wire / 1e6:.0f} MB)")
    print(f"    {'peak RSS':<24} {result['rss']:10.1f} MiB")


def main():
    top = world_readable_tempdir("mailsuite-bench-pop3-")
    try:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lib"))
        from mailsuite.server.passwords import hash_password, verify_password
        stored = hash_password("alice")
        started = time.perf_counter()
        verify_password("alice", stored)
        print(f"  scrypt password check: {(time.perf_counter() - started) * 1000:.1f} ms")
        spool, open_ours = ours(os.path.join(top, "sandbox"))
        generate_spool(spool, COUNT, SIZE)
        print(f"  spool: {COUNT} messages, {spool.stat().st_size / 2**20:.0f} MiB")
        results = []
        if os.access(DOVECOT_POP3, os.X_OK):
            dovecot_home = os.path.join(top, "dovecot")
            os.mkdir(dovecot_home)
            os.chmod(dovecot_home, 0o755)
            dovecot_spool, open_dovecot, own = dovecot(dovecot_home)
            shutil.copyfile(spool, dovecot_spool)
            own()
            results.append(measure("dovecot pop3", open_dovecot))
        else:
            print("  (Dovecot's pop3 is not installed: no reference figures)")
        results.append(measure("mailsuite pop3d", open_ours))
        for result in results:
            report(result)
    finally:
        shutil.rmtree(top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
