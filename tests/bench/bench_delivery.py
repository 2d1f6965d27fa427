"""Local delivery rate: mail.local against procmail and dovecot-lda, same message, same disk.

Every program appends N copies of a 4 KB message to an mbox, one process
per message (as an MTA runs them).  mail.local and dovecot-lda fsync each
message before they exit; procmail does not (it has no fsync).  The LMTP
line shows mail.local without the per-process start-up.  Each figure is the
median of RUNS runs, the programs taking turns; our programs run as
`make install` installs them (common.installed_programs).
"""

import os
import shutil
import subprocess
import sys
import time

from common import have, installed_programs, sandbox, scaled, world_readable_tempdir
from stats import LOWER, RUNS, Figure, Table, note, peers, save

N = scaled(300)
BODY = b"".join(b"line %04d of the benchmark message, about seventy bytes long.....\n" % i for i in range(60))
MESSAGE = b"From: bench@example.org\nTo: alice@localhost\nSubject: bench\n\n" + BODY


def ms_each(argv, inputs, **kwargs):
    """Milliseconds per run of ARGV, once for each of INPUTS, one after the other."""
    started = time.perf_counter()
    for data in inputs:
        subprocess.run(argv, input=data, stdout=subprocess.DEVNULL, check=True, **kwargs)
    return (time.perf_counter() - started) * 1000 / N


def mail_local(top):
    """A sandbox: {"process": ms per mail.local process, "lmtp": ms per message of one `mail.local -l`}."""
    conf = sandbox(os.path.join(top, "mailsuite"))
    program = installed_programs(os.path.join(top, "bin"))["mail.local"]
    lmtp = [b"LHLO bench"]
    for _ in range(N):
        lmtp += [b"MAIL FROM:<bench@example.org>", b"RCPT TO:<bob@localhost>", b"DATA", MESSAGE.rstrip(b"\n"), b"."]
    script = b"\r\n".join(line.replace(b"\n", b"\r\n") for line in lmtp + [b"QUIT"]) + b"\r\n"
    return lambda: {"process": ms_each([program, "-C", conf, "alice"], [MESSAGE] * N, stderr=subprocess.DEVNULL),
                    "lmtp": ms_each([program, "-C", conf, "-l"], [script], stderr=subprocess.DEVNULL)}


def bench_procmail(top):
    procmail = have("procmail")
    if not procmail:
        return None
    rc = os.path.join(top, "procmailrc")
    box = os.path.join(top, "procmail.mbox")
    with open(rc, "w") as f:
        f.write(f":0:\n{box}\n")
    data = b"From bench@example.org Mon Jan  1 00:00:00 2024\n" + MESSAGE
    return lambda: {"process": ms_each([procmail, "-m", rc], [data] * N)}


def bench_dovecot_lda(top):
    lda = "/usr/lib/dovecot/dovecot-lda"
    if not os.path.exists(lda):
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
    return lambda: {"process": ms_each([lda, "-c", conf, "-f", "bench@example.org"], [MESSAGE] * N, env=env,
                                       user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[])}


def main():
    top = world_readable_tempdir("mailsuite-bench-")
    print(f"{N} sequential deliveries of a {len(MESSAGE)}-byte message per run, {RUNS} runs", flush=True)
    notes, figures = [], {}
    try:
        programs = {"mail.local": mail_local(top), "procmail": bench_procmail(top),
                    "dovecot-lda": bench_dovecot_lda(top)}
        for name in [name for name, measure in programs.items() if measure is None]:
            notes.append(note(f"{name} is not installed: not measured"))
            del programs[name]
        for _ in range(RUNS):
            for name, measure in programs.items():
                for key, value in measure().items():
                    figures.setdefault((name, key), Figure()).add(value)
    finally:
        shutil.rmtree(top)
    ours = figures[("mail.local", "process")]
    tables = []
    for peer, remark in (("dovecot-lda", "mbox, fsync"), ("procmail", "no fsync")):
        table = Table(f"local delivery of {len(MESSAGE)} bytes, {N} in a row ({peer}: {remark})", peer)
        table.row("one process per message", "ms", ours, figures.get((peer, "process")), LOWER, digits=2)
        tables.append(table)
    tables[0].row("mail.local -l, one LMTP session", "ms", figures[("mail.local", "lmtp")], None, LOWER, digits=2)
    save("delivery", tables, notes, deliveries=N, message_bytes=len(MESSAGE), peers=peers())
    return 0


if __name__ == "__main__":
    sys.exit(main())
