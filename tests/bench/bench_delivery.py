"""Local delivery rate: mail.local against procmail and dovecot-lda, same message, same disk.

Every program appends N copies of a 4 KB message to an mbox, one process
per message (as an MTA runs them).  mail.local and dovecot-lda fsync each
message before they exit; procmail does not (it has no fsync).  The LMTP
line shows mail.local without the per-process start-up.
"""

import os
import shutil
import subprocess
import sys
import time

from common import BIN, have, sandbox, scaled, world_readable_tempdir

N = scaled(300)
BODY = b"".join(b"line %04d of the benchmark message, about seventy bytes long.....\n" % i for i in range(60))
MESSAGE = b"From: bench@example.org\nTo: alice@localhost\nSubject: bench\n\n" + BODY


def rate(label, seconds, count):
    print(f"{label:34} {count / seconds:8.1f} deliveries/s  ({seconds * 1000 / count:6.2f} ms each)")
    return count / seconds


def bench_mail_local(top):
    conf = sandbox(os.path.join(top, "mailsuite"))
    argv = [str(BIN / "mail.local"), "-C", conf, "alice"]
    started = time.perf_counter()
    for _ in range(N):
        subprocess.run(argv, input=MESSAGE, stderr=subprocess.DEVNULL, check=True)
    result = rate("mail.local (process per message)", time.perf_counter() - started, N)
    lmtp = [b"LHLO bench"]
    for _ in range(N):
        lmtp += [b"MAIL FROM:<bench@example.org>", b"RCPT TO:<bob@localhost>", b"DATA", MESSAGE.rstrip(b"\n"), b"."]
    script = b"\r\n".join(l.replace(b"\n", b"\r\n") for l in lmtp + [b"QUIT"]) + b"\r\n"
    started = time.perf_counter()
    subprocess.run([str(BIN / "mail.local"), "-C", conf, "-l"], input=script, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True)
    rate("mail.local -l (one LMTP session)", time.perf_counter() - started, N)
    return result


def bench_procmail(top):
    procmail = have("procmail")
    if not procmail:
        print("procmail: not installed")
        return None
    rc = os.path.join(top, "procmailrc")
    box = os.path.join(top, "procmail.mbox")
    with open(rc, "w") as f:
        f.write(f":0:\n{box}\n")
    data = b"From bench@example.org Mon Jan  1 00:00:00 2024\n" + MESSAGE
    started = time.perf_counter()
    for _ in range(N):
        subprocess.run([procmail, "-m", rc], input=data, check=True)
    return rate("procmail -m (no fsync)", time.perf_counter() - started, N)


def bench_dovecot_lda(top):
    lda = "/usr/lib/dovecot/dovecot-lda"
    if not os.path.exists(lda):
        print("dovecot-lda: not installed")
        return None
    import pwd
    nobody = pwd.getpwnam("nobody")
    home = os.path.join(top, "dovecot")
    os.makedirs(os.path.join(home, "mail"))
    conf = os.path.join(home, "dovecot.conf")
    with open(conf, "w") as f:
        f.write(f"base_dir = {home}/run\nlog_path = {home}/log\nssl = no\n"
                f"mail_location = mbox:{home}/mail:INBOX={home}/inbox\n")
    for path in (home, os.path.join(home, "mail")):
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    env = {"HOME": home, "USER": "nobody", "PATH": "/usr/bin:/bin"}
    started = time.perf_counter()
    for _ in range(N):
        subprocess.run([lda, "-c", conf, "-f", "bench@example.org"], input=MESSAGE, env=env, check=True,
                       user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[])
    return rate("dovecot-lda (mbox)", time.perf_counter() - started, N)


def main():
    top = world_readable_tempdir("mailsuite-bench-")
    try:
        print(f"{N} sequential deliveries of a {len(MESSAGE)}-byte message")
        ours = bench_mail_local(top)
        for name, theirs in (("procmail", bench_procmail(top)), ("dovecot-lda", bench_dovecot_lda(top))):
            if theirs:
                print(f"ratio mail.local / {name}: {ours / theirs:.2f}")
    finally:
        shutil.rmtree(top)


if __name__ == "__main__":
    sys.exit(main())
