"""Local submission: N sequential `sendmail -i USER < msg`, mailsuite against Postfix, same run.

For each MTA, with its daemon running (the usual state of a host), it times
the N submissions one after the other (what a cron job or a PHP site
costs), then the time until the last message is in the recipient's mbox.
Mailsuite is also timed without a daemon (sendmail delivers itself, -odi).
Our programs run as `make install` installs them (common.installed_programs);
"in mbox" is counted from the appended bytes (common.MboxCounter).

Postfix runs as a throwaway instance (own config_directory, queue_directory,
data_directory and mail spool under a temporary directory, no SMTP
listener), so it disturbs nothing on the machine; it needs root.  Without
root or Postfix, only mailsuite is measured.
"""

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import BIN, MboxCounter, installed_programs, scaled
from stats import HIGHER, LOWER, RUNS, Figure, Table, note, peers, save

N = scaled(1000)
SIZE = 5120
POSTFIX_SERVICES = ("pickup", "cleanup", "qmgr", "tlsmgr", "rewrite", "bounce", "defer", "trace",
                    "verify", "flush", "proxymap", "proxywrite", "showq", "error", "retry",
                    "discard", "local", "virtual", "lmtp", "anvil", "scache", "postlog", "smtp", "relay")


def message(size):
    head = b"From: bench@localhost\nTo: user\nSubject: benchmark\n\n"
    line = b"x" * 75 + b"\n"
    return head + line * max(1, (size - len(head)) // len(line))


def submit_loop(argv, data, n, env=None):
    """Seconds for N submissions one after the other."""
    started = time.perf_counter()
    for _ in range(n):
        subprocess.run(argv, input=data, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def measure(system, data, n):
    """(ms per submission, msg/s until all N are in the mbox)."""
    counter = MboxCounter(system.mbox)
    try:
        target = counter.count + n
        started = time.perf_counter()
        submit = submit_loop(system.argv, data, n, system.env)
        done = counter.wait_for(target, 60 + n)
    finally:
        counter.close()
    return 1000 * submit / n, n / (done - started)


# --- mailsuite -----------------------------------------------------------


def mailsuite_sandbox(base):
    subprocess.run([str(BIN / "mailsuite"), "init", "--dir", str(base)], check=True, stdout=subprocess.DEVNULL)
    (base / "spool" / "alice").write_bytes(b"")
    conf = base / "mailsuite.conf"
    text = conf.read_text()
    text = text.replace("listen = 127.0.0.1:2525", "listen = 127.0.0.1:0") if "[smtp]" in text \
        else text + "\n[smtp]\nlisten = 127.0.0.1:0\n"
    conf.write_text(text)
    return str(conf)


class Mailsuite:
    """A sandbox, with `sendmail -bD` running (DAEMON) or without (sendmail -odi delivers itself)."""

    env = None

    def __init__(self, base, programs, daemon):
        self.name = "mailsuite" + ("" if daemon else " -odi")
        conf = mailsuite_sandbox(base)
        self.mbox = base / "spool" / "alice"
        self.argv = [programs["sendmail"], "-C", conf] + ([] if daemon else ["-odi"]) + ["-i", "alice"]
        self.daemon = None
        if daemon:
            self.daemon = subprocess.Popen([programs["sendmail"], "-C", conf, "-bD"],
                                           stdout=subprocess.DEVNULL, stderr=open(base / "daemon.log", "wb"))
            from mailsuite.core import config
            from mailsuite.mta import runnerlock
            queue = config.load(conf).mailsuite.queue_dir
            deadline = time.monotonic() + 60
            while not runnerlock.active(queue):
                if self.daemon.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("our daemon did not start")
                time.sleep(0.05)

    def stop(self):
        if self.daemon:
            self.daemon.send_signal(signal.SIGTERM)
            self.daemon.wait(timeout=60)


# --- Postfix -------------------------------------------------------------


def postfix_instance(base):
    """A private Postfix: its own config, queue, data and spool directories; no SMTP listener."""
    etc, queue, data, spool = (base / d for d in ("etc", "queue", "data", "mail"))
    for d in (etc, queue, data, spool):
        d.mkdir(parents=True)
    os.chmod(base, 0o755)
    os.chmod(spool, 0o1777)
    shutil.chown(data, "postfix")
    user = pwd.getpwnam("nobody").pw_name
    (etc / "main.cf").write_text("\n".join([
        "compatibility_level = 3.6",
        f"queue_directory = {queue}",
        f"data_directory = {data}",
        f"mail_spool_directory = {spool}",
        "myhostname = bench.localdomain",
        "mydestination = $myhostname, localhost",
        "inet_interfaces = loopback-only",
        "inet_protocols = ipv4",
        "alias_maps =",
        "alias_database =",
        "home_mailbox =",
        "mailbox_command =",
        f"maillog_file = {base}/maillog",
        f"maillog_file_prefixes = {base}",
        f"syslog_name = postfix-bench-{os.getpid()}",
        "",
    ]))
    master = ["# service type private unpriv chroot wakeup maxproc command"]
    for line in Path("/etc/postfix/master.cf").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 8 and not line.startswith((" ", "\t", "#")) and fields[0] in POSTFIX_SERVICES \
                and fields[1] != "inet":
            master.append(" ".join(fields[:4] + ["n"] + fields[5:]))    # no chroot
    (etc / "master.cf").write_text("\n".join(master) + "\n")
    env = dict(os.environ, MAIL_CONFIG=str(etc))
    subprocess.run(["postfix", "-c", str(etc), "set-permissions"], env=env, check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["postfix", "-c", str(etc), "start"], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return etc, spool / user, user, env


class Postfix:
    """A private Postfix instance with its daemons running; submissions through its sendmail."""

    name = "postfix"

    def __init__(self, base):
        self.etc, self.mbox, user, self.env = postfix_instance(base)
        self.argv = ["/usr/sbin/sendmail", "-C", str(self.etc), "-i", user]
        time.sleep(1)

    def stop(self):
        subprocess.run(["postfix", "-c", str(self.etc), "stop"], env=self.env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    data = message(SIZE)
    base = Path(tempfile.mkdtemp(prefix="bench-submit-"))
    os.chmod(base, 0o755)
    programs = installed_programs(base / "bin")
    print(f"{N} sequential submissions of a {len(data)}-byte message per run, {RUNS} runs", flush=True)
    systems, notes, figures = [], [], {}
    try:
        systems.append(Mailsuite(base / "ms-daemon", programs, daemon=True))
        systems.append(Mailsuite(base / "ms-direct", programs, daemon=False))
        if os.geteuid() == 0 and shutil.which("postfix", path="/usr/sbin:/sbin:" + os.environ.get("PATH", "")):
            systems.append(Postfix(base / "postfix"))
        else:
            notes.append(note("Postfix skipped: needs root and the postfix package"))
        for run in range(RUNS):
            for system in systems:
                per_message, in_mbox = measure(system, data, N)
                figures.setdefault((system.name, "submit"), Figure()).add(per_message)
                figures.setdefault((system.name, "mbox"), Figure()).add(in_mbox)
                print(f"run {run + 1}: {system.name:16} {per_message:6.1f} ms each, in mbox {in_mbox:6.1f} msg/s",
                      flush=True)
    finally:
        for system in systems:
            system.stop()
        shutil.rmtree(base, ignore_errors=True)
    table = Table(f"sendmail -i, {N} sequential submissions of {len(data)} bytes", "Postfix")
    postfix = figures.get(("postfix", "submit")), figures.get(("postfix", "mbox"))
    table.row("sendmail -i, daemon running", "ms", figures[("mailsuite", "submit")], postfix[0], LOWER, digits=2)
    table.row("  all in the mbox", "msg/s", figures[("mailsuite", "mbox")], postfix[1], HIGHER)
    table.row("sendmail -i -odi, no daemon", "ms", figures[("mailsuite -odi", "submit")], None, LOWER, digits=2)
    table.row("  all in the mbox", "msg/s", figures[("mailsuite -odi", "mbox")], None, HIGHER)
    save("submit", [table], notes, messages=N, size=len(data), peers=peers())
    return 0


if __name__ == "__main__":
    sys.exit(main())
