"""SMTP reception: Postfix's smtp-source against our daemon and a throwaway Postfix, same machine, same run.

For each server and each concurrency (1 and 20 sessions): 10,000 messages
of 5 KB to one local user, a new connection per message (MX traffic).
Reported: how long until smtp-source has every 250 (acceptance rate), and
how long until every message is in the user's mbox.  BENCH_SCALE scales the
message count; Postfix needs root (skipped otherwise).
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent.parent / "lib"))

from smtp_helpers import Instance, ThrowawayPostfix  # noqa: E402

SCALE = float(os.environ.get("BENCH_SCALE", "1"))
MESSAGES = max(10, int(10_000 * SCALE))
SIZE = 5 * 1024
SESSIONS = (1, 20)
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"


def count_messages(mbox):
    try:
        data = Path(mbox).read_bytes()
    except FileNotFoundError:
        return 0
    return data.count(b"\n\nFrom ") + data.startswith(b"From ")


def measure(port, recipient, mbox, sessions):
    started = time.perf_counter()
    result = subprocess.run([SMTP_SOURCE, "-s", str(sessions), "-l", str(SIZE), "-m", str(MESSAGES),
                             "-f", "bench@client.test", "-t", recipient, "-M", "client.test",
                             f"127.0.0.1:{port}"], capture_output=True, text=True)
    accepted = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError("smtp-source: " + result.stderr.strip())
    deadline = time.monotonic() + 1800
    while count_messages(mbox) < MESSAGES:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {count_messages(mbox)} of {MESSAGES} delivered")
        time.sleep(0.2)
    delivered = time.perf_counter() - started
    return accepted, delivered


def ours(sessions):
    directory = Path(tempfile.mkdtemp(prefix="mailsuite-bench-smtp-"))
    try:
        host = Instance(directory, smtp={"max_children": "64", "max_sessions_per_address": "0",
                                         "listen": "127.0.0.1:0"},
                        mailsuite={"log_level": "warning"}).start(runner=True)
        try:
            return measure(host.port, "alice@example.test", directory / "spool" / "alice", sessions)
        finally:
            host.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def postfix(sessions):
    server = ThrowawayPostfix({"virtual_mailbox_domains": "p.test",
                               "virtual_mailbox_maps": "inline:{ alice@p.test=alice }",
                               "virtual_uid_maps": f"static:{_postfix_uid()}",
                               "virtual_gid_maps": f"static:{_postfix_gid()}", "virtual_minimum_uid": "1",
                               "virtual_mailbox_limit": "0"})
    try:
        return measure(server.port, "alice@p.test", server.dir / "vmail" / "alice", sessions)
    finally:
        server.stop()


def _postfix_uid():
    import pwd
    return pwd.getpwnam("postfix").pw_uid


def _postfix_gid():
    import pwd
    return pwd.getpwnam("postfix").pw_gid


def _stop(signum, frame):
    raise SystemExit(128 + signum)       # run the finally blocks: daemons and Postfix are stopped


def main():
    signal.signal(signal.SIGTERM, _stop)
    if not os.path.exists(SMTP_SOURCE):
        print("smtp-source not installed: skipped")
        return 0
    print(f"{MESSAGES} messages of {SIZE} bytes, one connection per message")
    print(f"{'server':10} {'sessions':>8} {'accept s':>9} {'msg/s':>8} {'in mbox s':>10} {'msg/s':>8}")
    rows = {}
    for sessions in SESSIONS:
        for name, run in (("mailsuite", ours), ("postfix", postfix)):
            if name == "postfix" and not ThrowawayPostfix.available():
                print(f"{name:10} {sessions:8}   skipped (needs root and Postfix)")
                continue
            accepted, delivered = run(sessions)
            rows[name, sessions] = (accepted, delivered)
            print(f"{name:10} {sessions:8} {accepted:9.1f} {MESSAGES / accepted:8.0f} "
                  f"{delivered:10.1f} {MESSAGES / delivered:8.0f}", flush=True)
    for sessions in SESSIONS:
        if ("mailsuite", sessions) in rows and ("postfix", sessions) in rows:
            (oa, od), (pa, pd) = rows["mailsuite", sessions], rows["postfix", sessions]
            print(f"ratio mailsuite/postfix at {sessions} session(s): acceptance rate {pa / oa:.2f}, "
                  f"delivery rate {pd / od:.2f}  (>1 = mailsuite faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
