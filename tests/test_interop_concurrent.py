"""Eight mail.local processes and procmail write one spool at the same time.

Each mail.local runs an LMTP session delivering 500 messages; procmail
delivers its own messages meanwhile with its usual fcntl + dotlock.  At the
end every message is in the spool exactly once, intact.
"""

import hashlib
import mailbox
import subprocess
import threading

import pytest
from conftest import need, program

WRITERS = 8
PER_WRITER = 500
PROCMAIL_MESSAGES = 150


def body_for(tag):
    return b"".join(b"%s line %d\n" % (tag, i) for i in range(20)) + b"From inside the body\n"


def lmtp_script(writer):
    out = [b"LHLO test"]
    for n in range(PER_WRITER):
        tag = b"w%d-%d" % (writer, n)
        out += [b"MAIL FROM:<w@example.org>", b"RCPT TO:<alice@localhost>", b"DATA",
                b"Message-ID: <" + tag + b"@test>", b"Subject: " + tag, b"", body_for(tag).rstrip(b"\n"), b"."]
    out.append(b"QUIT")
    return b"\r\n".join(out) + b"\r\n"


@pytest.mark.slow
def test_eight_writers_and_procmail(sandbox, tmp_path):
    procmail = need("procmail")
    spool = sandbox.spool("alice")
    rc = tmp_path / "procmailrc"
    rc.write_text(f":0:\n{spool}\n")                 # procmail -m takes the From_ line from its input, as from an MTA
    failures = []

    def run_procmail():
        for n in range(PROCMAIL_MESSAGES):
            tag = b"p-%d" % n
            msg = b"From p@example.org Mon Jan  1 00:00:00 2024\nMessage-ID: <" + tag + b"@test>\nSubject: " + tag + b"\n\n" + body_for(tag)
            done = subprocess.run([procmail, "-m", str(rc)], input=msg, capture_output=True)
            if done.returncode:
                failures.append(done.stderr)

    writers = [subprocess.Popen([program("mail.local"), "-C", sandbox.conf, "-l"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE) for _ in range(WRITERS)]
    feeder = threading.Thread(target=run_procmail)
    feeder.start()
    outputs = []
    threads = [threading.Thread(target=lambda p=p, w=w: outputs.append(p.communicate(lmtp_script(w), timeout=600)[0]))
               for w, p in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    feeder.join()
    assert not failures
    assert all(p.returncode == 0 for p in writers)
    assert sum(out.count(b"250 2.0.0 <alice@localhost> delivered") for out in outputs) == WRITERS * PER_WRITER

    box = mailbox.mbox(str(spool), create=False)
    seen = {}
    try:
        for key in box.keys():
            msg = box.get_message(key)
            tag = msg["subject"].encode()
            assert tag not in seen, f"{tag} twice"
            seen[tag] = hashlib.sha256(msg.get_payload(decode=False).encode("latin-1")).hexdigest()
    finally:
        box.close()
    expected = {b"w%d-%d" % (w, n) for w in range(WRITERS) for n in range(PER_WRITER)}
    expected |= {b"p-%d" % n for n in range(PROCMAIL_MESSAGES)}
    assert set(seen) == expected
    for tag, digest in seen.items():
        quoted = body_for(tag).replace(b"\nFrom inside", b"\n>From inside")
        assert digest == hashlib.sha256(quoted).hexdigest(), tag
