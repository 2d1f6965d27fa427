"""Files Dovecot wrote, read and written by every program of ours, then read back by Dovecot with the same UIDs.

Dovecot (dovecot-lda, its imap) writes body lines that start with "From "
as they are and relies on Content-Length; our scanner trusts that header
the way Dovecot does, so both see the same messages and we never write
into what Dovecot sees as a body.  And one quoting rule, Dovecot's: no
reader unquotes, so imapd, pop3d, `mail` and Dovecot show the same bytes
with the same sizes, and APPEND then FETCH gives back what was appended.
"""

import re
import subprocess

import peers
import pytest
from imap_support import RUN_AS, Dovecot, _as, deliver, imapd, program

pytestmark = peers.needs("dovecot-lda", "dovecot-imap")

BODIES = [
    ("blank-then-from", b"first\n\nFrom the middle after a blank line\nmore\n"),
    ("valid-from", b"From x Thu Nov 29 22:33:52 2001\nthird\n"),
    ("plain", b"just text\n"),
    ("quoted", b">From already quoted\n>>From twice\n"),
]


def lda(sb, subject, body):
    """dovecot-lda delivers to alice's spool (Content-Length, no quoting)."""
    dovecot = Dovecot(sb, run_as=RUN_AS)
    done = subprocess.run(_as(RUN_AS) + [peers.require("dovecot-lda"), "-c", str(dovecot.conf), "-f", "s@example.org"],
                          input=b"Subject: " + subject.encode() + b"\n\n" + body, env=dovecot.env,
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr


def view(session):
    """[(uid, flags, RFC822.SIZE, BODY[])] of INBOX through an IMAP session (which is logged out)."""
    try:
        typ, data = session.select("INBOX", readonly=True)
        out = []
        if int(data[0]):
            typ, data = session.fetch("1:*", "(UID FLAGS RFC822.SIZE BODY.PEEK[])")
            for item in data:
                if isinstance(item, tuple):
                    head = item[0].decode()
                    flags = sorted(set(re.search(r"FLAGS \(([^)]*)\)", head).group(1).split()) - {"\\Recent"})
                    out.append((int(re.search(r"UID (\d+)", head).group(1)), flags,
                                int(re.search(r"RFC822.SIZE (\d+)", head).group(1)), item[1]))
        return out
    finally:
        session.logout()


def dovecots(sb):
    return view(Dovecot(sb, run_as=RUN_AS).session())


def ours(sb):
    return view(imapd(sb, as_user=RUN_AS))


def crlf(data):
    return data.replace(b"\n", b"\r\n")


def run(sb, name, *args, input=b""):
    done = subprocess.run(_as(RUN_AS) + [program(name, RUN_AS), "-C", sb.conf, *args], input=input,
                          capture_output=True, timeout=60, env=sb.env)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def dovecot_file(shared_sandbox):
    for subject, body in BODIES:
        lda(shared_sandbox, subject, body)
    return shared_sandbox


def test_imapd_reads_and_writes_a_file_dovecot_wrote(dovecot_file):
    sb = dovecot_file
    expected = dovecots(sb)
    assert [m[0] for m in expected] == [1, 2, 3, 4]
    assert [m[3].split(b"\r\n\r\n", 1)[1] for m in expected] == [crlf(body) for _, body in BODIES]
    assert ours(sb) == expected
    session = imapd(sb, as_user=RUN_AS)
    session.select("INBOX")
    session.store("1", "+FLAGS", r"(\Flagged)")
    session.store("2", "+FLAGS", r"(\Seen $Label)")
    session.store("3", "+FLAGS", r"(\Deleted)")
    session.expunge()
    assert session.append("INBOX", None, None, b"Subject: appended\r\n\r\nFrom appended line\r\n")[0] == "OK"
    session.logout()
    after = ours(sb)
    assert dovecots(sb) == after
    assert [m[0] for m in after] == [1, 2, 4, 5]
    assert [m[3].split(b"\r\n\r\n", 1)[1] for m in after[:3]] == [crlf(b) for i, (_, b) in enumerate(BODIES) if i != 2]
    assert after[0][1] == ["\\Flagged"] and after[1][1] == ["$Label", "\\Seen"]


def test_pop3d_and_mail_on_a_file_dovecot_wrote(dovecot_file):
    sb = dovecot_file
    expected = dovecots(sb)
    validity = None
    out = run(sb, "pop3d", input=b"USER alice\r\nPASS alice\r\nUIDL\r\nLIST\r\n"
                                  + b"".join(b"RETR %d\r\n" % n for n in range(1, 5)) + b"DELE 4\r\nQUIT\r\n")
    blocks = out.split(b"\r\n.\r\n")
    uidls = [line.split() for line in blocks[0].split(b"\r\n")[4:]]
    sizes = [line.split() for line in blocks[1].split(b"\r\n")[1:]]
    for (n, uidl), (_, size), message, (uid, _, rfc822_size, body) in zip(uidls, sizes, blocks[2:6], expected):
        assert int(uidl[:8], 16) == uid
        validity = validity or uidl[8:]
        assert uidl[8:] == validity
        assert int(size) == rfc822_size
        assert message.split(b"\r\n", 1)[1] + b"\r\n" == body
    after = dovecots(sb)
    assert without_flags(after) == without_flags(expected[:3])     # pop3d's DELE 4 removed exactly that one
    assert all(m[1] == ["\\Seen"] for m in after)                 # and marked the retrieved ones read
    shown = run(sb, "mail", "-u", "alice", input=b"set hold\np 1\np 2\np 3\nd 2\nq\n")
    for _, body in BODIES[:3]:
        assert body in shown.replace(b"\r\n", b"\n")
    assert without_flags(dovecots(sb)) == without_flags([expected[0], expected[2]])


def without_flags(messages):
    return [(uid, size, body) for uid, _, size, body in messages]


def test_one_quoting_rule_for_every_reader(shared_sandbox):
    """APPEND then FETCH gives back the bytes appended, as in Dovecot; a delivered message reads alike everywhere."""
    sb = shared_sandbox
    message = b"Subject: quoting\r\n\r\nFrom me\r\n>From you\r\n>>From them\r\nno final newline"
    session = imapd(sb, as_user=RUN_AS)
    session.append("INBOX", None, None, message)
    session.logout()
    dovecot = Dovecot(sb, run_as=RUN_AS).session()
    dovecot.append("INBOX", None, None, message)
    dovecot.logout()
    deliver(sb, "alice", message.replace(b"\r\n", b"\n"), as_user=RUN_AS)
    mine, theirs = ours(sb), dovecots(sb)
    assert mine == theirs
    assert mine[0][3] == mine[1][3] == message + b"\r\n"  # as appended; a missing last newline added, as Dovecot does
    delivered = mine[2][3]
    assert delivered.endswith(b"\r\n\r\n>From me\r\n>>From you\r\n>>>From them\r\nno final newline\r\n")
    out = run(sb, "pop3d", input=b"USER alice\r\nPASS alice\r\nLIST\r\nRETR 1\r\nRETR 3\r\nQUIT\r\n")
    blocks = out.split(b"\r\n.\r\n")
    assert [int(line.split()[1]) for line in blocks[0].split(b"\r\n")[4:]] == [m[2] for m in mine]
    assert blocks[1].split(b"\r\n", 1)[1] + b"\r\n" == mine[0][3]
    assert blocks[2].split(b"\r\n", 1)[1] + b"\r\n" == delivered
    shown = run(sb, "mail", "-u", "alice", input=b"set hold\np 1\np 3\nq\n").replace(b"\r\n", b"\n")
    assert shown.count(b"\nFrom me\n>From you\n>>From them\nno final newline\n") == 1
    assert shown.count(b"\n>From me\n>>From you\n>>>From them\nno final newline\n") == 1
