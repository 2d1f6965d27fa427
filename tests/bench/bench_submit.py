#!/usr/bin/env python3
"""Benchmark: N sequential `sendmail -i USER < msg` submissions, mailsuite against Postfix.

For each MTA, with its daemon running (the usual state of a host), it times
the N submissions one after the other (what a cron job or a PHP site
costs), then the time until the last message is in the recipient's mbox.
Mailsuite is also timed without a daemon (sendmail delivers itself, -odi).

Postfix runs as a throwaway instance (own config_directory, queue_directory,
data_directory and mail spool under a temporary directory, no SMTP
listener), so it disturbs nothing on the machine; it needs root.  Without
root or Postfix, only mailsuite is measured.

    python3 tests/bench/bench_submit.py [-n 1000] [--size 5120]
"""

import argparse
import mailbox
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lib"))
POSTFIX_SERVICES = ("pickup", "cleanup", "qmgr", "tlsmgr", "rewrite", "bounce", "defer", "trace",
                    "verify", "flush", "proxymap", "proxywrite", "showq", "error", "retry",
                    "discard", "local", "virtual", "lmtp", "anvil", "scache", "postlog", "smtp", "relay")


def message(size):
    head = b"From: bench@localhost\nTo: user\nSubject: benchmark\n\n"
    line = b"x" * 75 + b"\n"
    return head + line * max(1, (size - len(head)) // len(line))


def count(path):
    if not os.path.exists(path):
        return 0
    box = mailbox.mbox(path, create=False)
    try:
        return len(box)
    finally:
        box.close()


def wait_count(path, n, timeout=None):
    timeout = timeout or 60 + n
    deadline = time.monotonic() + timeout
    while count(path) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path}: {count(path)} of {n} messages")
        time.sleep(0.2)


def submit_loop(argv, data, n, env=None):
    started = time.monotonic()
    for _ in range(n):
        subprocess.run(argv, input=data, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


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


def bench_mailsuite_daemon(base, data, n):
    conf = mailsuite_sandbox(base)
    daemon = subprocess.Popen([str(BIN / "sendmail"), "-C", conf, "-bD"],
                              stdout=subprocess.DEVNULL, stderr=open(base / "daemon.log", "wb"))
    try:
        from mailsuite.core import config
        from mailsuite.mta import runnerlock
        cfg = config.load(conf)
        while not runnerlock.active(cfg.mailsuite.queue_dir):
            time.sleep(0.05)
        started = time.monotonic()
        submit = submit_loop([str(BIN / "sendmail"), "-C", conf, "-i", "alice"], data, n)
        wait_count(str(base / "spool" / "alice"), n)
        return submit, time.monotonic() - started
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)


def bench_mailsuite_direct(base, data, n):
    conf = mailsuite_sandbox(base)
    started = time.monotonic()
    submit = submit_loop([str(BIN / "sendmail"), "-C", conf, "-odi", "-i", "alice"], data, n)
    wait_count(str(base / "spool" / "alice"), n)
    return submit, time.monotonic() - started


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


def bench_postfix(base, data, n):
    etc, mbox, user, env = postfix_instance(base)
    try:
        time.sleep(1)
        started = time.monotonic()
        submit = submit_loop(["/usr/sbin/sendmail", "-C", str(etc), "-i", user], data, n, env=env)
        wait_count(str(mbox), n)
        return submit, time.monotonic() - started
    finally:
        subprocess.run(["postfix", "-c", str(etc), "stop"], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def report(name, n, submit, total):
    print(f"{name:34} {n} msgs  submit {submit:7.2f} s ({n / submit:7.1f}/s, {1000 * submit / n:6.1f} ms each)"
          f"   all in mbox {total:7.2f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--size", type=int, default=5120)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    args = parser.parse_args()
    data = message(args.size)
    base = Path(tempfile.mkdtemp(prefix="bench-submit-"))
    os.chmod(base, 0o755)
    try:
        results = [("mailsuite (daemon running)",) + bench_mailsuite_daemon(base / "ms-daemon", data, args.n),
                   ("mailsuite (no daemon, -odi)",) + bench_mailsuite_direct(base / "ms-direct", data, args.n)]
        if os.geteuid() == 0 and shutil.which("postfix"):
            results.append(("postfix (daemon running)",) + bench_postfix(base / "postfix", data, args.n))
        else:
            print("postfix: skipped (needs root and postfix)")
        for name, submit, total in results:
            report(name, args.n, submit, total)
    finally:
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
