"""imapd against Dovecot's imap on the same generated spool, same run.

Both servers run one preauthenticated session on stdin/stdout (no network,
no password hashing in the way), on the same mbox file with store headers
already written (the steady state either server leaves behind):

- LOGIN+SELECT cold (no index cache) and warm (cache from the first run);
- UID FETCH 1:* (FLAGS);
- FETCH 1:* (BODY.PEEK[]): every message body, in MB/s;
- SEARCH on a header (SUBJECT) and on body text;
- the session's peak RSS (VmHWM).

Default scale: 100,000 messages, about 1 GiB (BENCH_SCALE scales the count).
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

DOVECOT = "/usr/lib/dovecot/imap"
MESSAGE_SIZE = 10_700
RUN_AS = "nobody" if os.geteuid() == 0 else None


def as_user():
    if not RUN_AS:
        return []
    entry = pwd.getpwnam(RUN_AS)
    return ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups", "--"]


class Session:
    """One server process; commands timed until their tagged reply."""

    def __init__(self, argv, env):
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
        index = box.sync(flags={uid: ({"O"}, ()) for uid in range(1, count + 1)})
        index = box.sync(flags={m.uid: ({"O"}, ()) for m in index.messages})
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


def ours(conf, env):
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


def measure(name, argv, env, forget_index):
    forget_index()
    results = {}
    for label in ("select_cold", "select_warm"):
        started = time.perf_counter()
        session = Session(argv, env)
        session.command("SELECT INBOX")
        results[label] = time.perf_counter() - started
        if label == "select_warm":
            break
        session.close()
    results["uid_fetch_flags"], _ = session.command("UID FETCH 1:* (FLAGS)")
    elapsed, octets = session.command("FETCH 1:* (BODY.PEEK[])")
    results["fetch_bodies_mb_s"] = octets / elapsed / 1e6
    results["fetch_bodies_s"] = elapsed
    results["search_header"], _ = session.command('SEARCH SUBJECT "message 4242"')
    results["search_body"], _ = session.command("SEARCH BODY zebra")
    results["peak_rss_mib"] = session.peak_rss_mib()
    session.close()
    return results


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
    subprocess.run(as_user() + [str(BIN / "imapd"), "-C", conf, "--preauth", "alice"], input=b"a LOGOUT\r\n",
                   env=env, stdout=subprocess.DEVNULL, check=True)
    cache_dir = Path(home, ".cache", "mailsuite")
    dconf, dindex = dovecot_conf(directory, spool, home)
    try:
        mine = measure("imapd", ours(conf, env), env, lambda: shutil.rmtree(cache_dir, ignore_errors=True))
        theirs = measure("dovecot", as_user() + [DOVECOT, "-c", str(dconf)], env,
                         lambda: shutil.rmtree(dindex, ignore_errors=True))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(f"{'':24} {'imapd':>10} {'dovecot':>10} {'ratio':>7}")
    for key, unit in (("select_cold", "s"), ("select_warm", "s"), ("uid_fetch_flags", "s"),
                      ("fetch_bodies_s", "s"), ("fetch_bodies_mb_s", "MB/s"), ("search_header", "s"),
                      ("search_body", "s"), ("peak_rss_mib", "MiB")):
        a, b = mine[key], theirs[key]
        print(f"{key + ' (' + unit + ')':24} {a:10.3f} {b:10.3f} {a / b if b else 0:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
