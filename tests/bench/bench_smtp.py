"""SMTP reception: Postfix's smtp-source against our daemon and a throwaway Postfix, same machine, same run.

For each concurrency (1 and 20 sessions): MESSAGES messages of 5 KB to
one local user, a new connection per message (MX traffic).  Reported: the
rate until smtp-source has every 250 (acceptance), and the rate until
every message is in the user's mbox (end to end), each the median of
BENCH_RUNS runs, the servers taking turns.

Equal set-ups, as far as two designs allow:
- both run unprivileged as the same user (BENCH_USER): our `sendmail -bD`
  in a sandbox owned by it, Postfix's smtpd as postfix with its virtual(8)
  agent delivering as BENCH_USER;
- both fsync the queue file before 250 and the mbox before the queue file
  goes;
- both take fcntl + dotlock on the mbox (Postfix's virtual_mailbox_lock
  default, written out; ours always);
- both log every message: Postfix through postlogd to its maillog_file, we
  at info level to a file (stderr);
- neither limits connections from 127.0.0.1 (Postfix exempts mynetworks
  from anvil's limits; we set max_sessions_per_address = 0);
- "in mbox" is counted from the bytes appended since the last look, woken
  by inotify (common.MboxCounter).
Postfix needs root: without it only mailsuite is measured.
"""

import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import MboxCounter, as_bench_user, bench_user, give_to_bench_user, installed_programs, scaled
from stats import HIGHER, RUNS, Figure, Table, note, peers, save

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MESSAGES = scaled(10_000)
SIZE = 5 * 1024
SESSIONS = (1, 20)
WARM_UP = 40
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
TIMEOUT = float(__import__("os").environ.get("BENCH_TIMEOUT", 600 + MESSAGES / 10))


class Ours:
    """`sendmail -bD` in a sandbox owned by the bench user, logging at info to its stderr (a file)."""

    name = "mailsuite"
    domain = "example.test"

    def __init__(self, directory):
        self.dir = Path(directory)
        self.programs = installed_programs(self.dir / "bin")
        for sub in ("spool", "queue", "maildrop", "state", "home/alice"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "passwd").write_text(f"alice:*:::Alice:{self.dir / 'home/alice'}\n")
        (self.dir / "aliases").write_text("postmaster: alice\n")
        self.conf = self.dir / "mailsuite.conf"
        self.conf.write_text(
            f"[mailsuite]\nhostname = mx.{self.domain}\nlocal_domains = {self.domain}\nsandbox = yes\n"
            f"spool_dir = {self.dir / 'spool'}\nqueue_dir = {self.dir / 'queue'}\n"
            f"maildrop_dir = {self.dir / 'maildrop'}\nstate_dir = {self.dir / 'state'}\n"
            f"passwd_file = {self.dir / 'passwd'}\nlog_socket =\nlog_level = info\n\n"
            f"[queue]\naliases = {self.dir / 'aliases'}\n\n"
            f"[smtp]\nlisten = 127.0.0.1:0\nmax_sessions_per_address = 0\n")
        self.mbox = self.dir / "spool" / "alice"
        give_to_bench_user(self.dir)
        self.log = self.dir / "maillog"
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([self.programs["sendmail"], "-C", str(self.conf), "-bD"],
                                            stdout=subprocess.DEVNULL, stderr=log, **as_bench_user())
        deadline = time.monotonic() + 60
        while not (found := re.search(rb"listening on 127\.0\.0\.1:(\d+)", self.log.read_bytes())):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("our daemon did not start: " + self.log.read_text(errors="replace")[-2000:])
            time.sleep(0.05)
        self.port = int(found.group(1))

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Postfix:
    """A throwaway Postfix (tests/smtp_helpers.py) delivering with virtual(8) to one mbox, as the bench user."""

    name = "postfix"
    domain = "p.test"

    def __init__(self):
        from smtp_helpers import ThrowawayPostfix
        user = bench_user()
        self.server = ThrowawayPostfix({
            "virtual_mailbox_domains": self.domain, "virtual_mailbox_maps": "inline:{ alice@p.test=alice }",
            "virtual_uid_maps": f"static:{user.pw_uid}", "virtual_gid_maps": f"static:{user.pw_gid}",
            "virtual_minimum_uid": "1", "virtual_mailbox_limit": "0", "virtual_mailbox_lock": "fcntl, dotlock"})
        os.chown(self.server.dir / "vmail", user.pw_uid, user.pw_gid)
        self.port = self.server.port
        self.mbox = self.server.dir / "vmail" / "alice"

    def stop(self):
        self.server.stop()


def send(server, sessions, count):
    """(seconds until every 250, seconds until every message is in the mbox)."""
    counter = MboxCounter(server.mbox)
    try:
        target = counter.count + count
        started = time.perf_counter()
        done = subprocess.run([SMTP_SOURCE, "-s", str(sessions), "-l", str(SIZE), "-m", str(count),
                               "-f", "bench@client.test", "-t", f"alice@{server.domain}", "-M", "client.test",
                               f"127.0.0.1:{server.port}"], capture_output=True, text=True, timeout=TIMEOUT)
        accepted = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"smtp-source against {server.name}: {done.stderr.strip()}")
        delivered = counter.wait_for(target, TIMEOUT) - started
    finally:
        counter.close()
    return accepted, delivered


def _postfix_possible():
    if os.geteuid() != 0 or not shutil.which("postfix", path="/usr/sbin:/sbin:" + os.environ.get("PATH", "")):
        return False
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return False
    return True


def _stop(signum, frame):
    raise SystemExit(128 + signum)       # run the finally blocks: daemons and Postfix are stopped


def main():
    signal.signal(signal.SIGTERM, _stop)
    if not os.path.exists(SMTP_SOURCE):
        print("smtp-source (package postfix) is not installed: skipped")
        return 0
    print(f"{MESSAGES} messages of {SIZE} bytes per run, one connection per message, {RUNS} runs", flush=True)
    servers, notes = [], []
    samples = {}
    try:
        servers.append(Ours(tempfile.mkdtemp(prefix="mailsuite-bench-smtp-")))
        if _postfix_possible():
            servers.append(Postfix())
        else:
            notes.append(note("Postfix skipped: needs root and the postfix package"))
        for server in servers:                      # processes started, caches warm: for both alike
            for sessions in SESSIONS:
                send(server, sessions, WARM_UP)
        for run in range(RUNS):
            for sessions in SESSIONS:
                for server in servers:
                    accepted, delivered = send(server, sessions, MESSAGES)
                    for kind, seconds in (("accepted", accepted), ("in mbox", delivered)):
                        samples.setdefault((server.name, sessions, kind), Figure()).add(MESSAGES / seconds)
                    print(f"run {run + 1}: {server.name:10} {sessions:2} session(s): "
                          f"accepted {MESSAGES / accepted:7.0f} msg/s, in mbox {MESSAGES / delivered:7.0f} msg/s",
                          flush=True)
    finally:
        for server in servers:
            server.stop()
    table = Table(f"SMTP, {MESSAGES} x {SIZE} bytes, one connection per message", "Postfix")
    for sessions in SESSIONS:
        for kind in ("accepted", "in mbox"):
            table.row(f"{kind}, {sessions} session(s)", "msg/s", samples[("mailsuite", sessions, kind)],
                      samples.get(("postfix", sessions, kind)), HIGHER, digits=0)
    save("smtp", [table], notes, messages=MESSAGES, size=SIZE, sessions=SESSIONS, connection="one per message",
         peers=peers())
    return 0


if __name__ == "__main__":
    sys.exit(main())
