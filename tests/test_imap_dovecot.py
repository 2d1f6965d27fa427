"""Dovecot on the same files: same UIDs, UIDVALIDITY, flags, sizes and structures.

Dovecot's own `imap` binary runs in preauth mode with
`mail_location = mbox:~/mail:INBOX=<spool>` and an in-memory index, so
everything it reports comes from the mbox headers we wrote, and the other
way round.
"""

import re

import peers
import pytest
from imap_support import RUN_AS, deliver, ours, shared_sandbox, theirs

pytestmark = peers.needs("dovecot-imap")

CORPUS = [
    b"From: a@example.org\nTo: b@example.org\nSubject: plain\n\nline one\nline two\n",
    b"From: \"Last, First\" <f@example.org>\nTo: undisclosed-recipients:;\nCc: x@y.z, Group: m@n.o, p@q.r;\n"
    b"Subject: =?iso-8859-1?q?caf=E9?=\nDate: Wed, 4 Jan 2023 09:00:00 -0500\nIn-Reply-To: <a@b>\n"
    b"Message-ID: <c@d>\nMIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=\"b1\"\n\n"
    b"--b1\nContent-Type: text/plain; charset=\"iso-8859-1\"\nContent-Transfer-Encoding: 8bit\n\ncaf\xe9\n"
    b"--b1\nContent-Type: text/html; charset=utf-8\nContent-Language: fr\n\n<p>caf\xc3\xa9</p>\n--b1--\n",
    b"From: z@example.org\nSubject: nested\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=outer\n\n"
    b"--outer\nContent-Type: multipart/related; boundary=inner; type=\"text/html\"\n\n--inner\n"
    b"Content-Type: text/html\n\n<img src=cid:1>\n--inner\nContent-Type: image/png\nContent-ID: <1>\n"
    b"Content-Transfer-Encoding: base64\nContent-Description: a dot\n\niVBORw0KGgo=\n--inner--\n"
    b"--outer\nContent-Type: message/rfc822\nContent-Disposition: inline\n\nFrom: inner@example.org\n"
    b"Subject: forwarded\nContent-Type: text/plain\n\nforwarded body\nsecond line\n"
    b"--outer\nContent-Type: text/plain; name*=utf-8''%E2%82%AC.txt\nContent-Disposition: attachment;\n"
    b" filename=\"x.txt\"; size=4\nContent-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\nContent-Location: http://x/y\n\nabc\n--outer--\nepilogue\n",
    b"From: broken@example.org\nSubject: no close delimiter\nContent-Type: multipart/mixed; boundary=zz\n\n"
    b"--zz\nContent-Type: text/plain\n\npart one\n--zz\n\npart two without header\n",
    b"From: nobody\nSubject: no final newline\n\nlast line",
]


shared = pytest.fixture(shared_sandbox)


def state(imap, items="(UID FLAGS RFC822.SIZE)"):
    typ, data = imap.select("INBOX", readonly=True)
    assert typ == "OK", data
    out = {
        "exists": int(data[0]),
        "uidvalidity": imap.untagged_responses["UIDVALIDITY"][-1],
        "uidnext": imap.untagged_responses["UIDNEXT"][-1],
    }
    typ, data = imap.fetch("1:*", items) if out["exists"] else ("OK", [])
    assert typ == "OK", data
    out["messages"] = [_normalise(d) for d in data if d not in (None, b")")]
    return out


def _normalise(item):
    if isinstance(item, tuple):
        return (_normalise(item[0]), item[1])
    item = item.replace(b" \\Recent", b"").replace(b"\\Recent ", b"").replace(b"\\Recent", b"")
    item = re.sub(rb"\(([^()]*)\)", lambda m: b"(" + b" ".join(sorted(m.group(1).split())) + b")", item) if b"FLAGS" in item else item
    return item


def fill(box):
    for message in CORPUS:
        deliver(box, "alice", message, as_user=RUN_AS)


def test_dovecot_reads_what_we_wrote(shared):
    fill(shared)
    imap = ours(shared)
    imap.select("INBOX")
    imap.store("1", "+FLAGS", r"(\Flagged \Answered $Work)")
    imap.store("2", "+FLAGS", r"(\Seen \Draft)")
    imap.store("3", "+FLAGS", r"(\Deleted)")
    imap.expunge()
    imap.append("INBOX", r"(\Seen Later)", None, b"Subject: appended\r\n\r\nvia IMAP\r\n")
    mine = state(imap)
    imap.logout()
    dove = theirs(shared)
    assert state(dove) == mine
    dove.logout()
    assert len(mine["messages"]) == len(CORPUS)


def test_structures_agree_with_dovecot(shared):
    fill(shared)
    items = "(UID RFC822.SIZE ENVELOPE BODYSTRUCTURE BODY BODY.PEEK[] BODY.PEEK[1] BODY.PEEK[1.MIME] BODY.PEEK[TEXT])"
    imap = ours(shared)
    imap.select("INBOX")  # assigns UIDs
    imap.logout()
    dove = theirs(shared)
    expected = state(dove, items)
    dove.logout()
    imap = ours(shared)
    got = state(imap, items)
    imap.logout()
    assert got == expected, "\n".join(f"ours:    {a!r}\ndovecot: {b!r}"
                                       for a, b in zip(got["messages"], expected["messages"]) if a != b)


def test_we_read_what_dovecot_wrote(shared):
    fill(shared)
    dove = theirs(shared)
    dove.select("INBOX")
    dove.store("2", "+FLAGS", r"(\Flagged $Label1)")
    dove.store("4", "+FLAGS", r"(\Deleted)")
    dove.expunge()
    dove.append("INBOX", r"(\Answered)", None, b"Subject: from dovecot\r\n\r\nhi\r\n")
    dove.logout()
    dove = theirs(shared)
    expected = state(dove)
    dove.logout()
    imap = ours(shared)
    assert state(imap) == expected
    imap.logout()


def test_uids_survive_alternating_servers(shared):
    fill(shared)
    for round_ in range(3):
        deliver(shared, "alice", b"Subject: round %d\n\nx\n" % round_, as_user=RUN_AS)
        imap = ours(shared) if round_ % 2 == 0 else theirs(shared)
        imap.select("INBOX")
        imap.store("1", "+FLAGS", r"(\Seen)")
        imap.logout()
    a, b = ours(shared), theirs(shared)
    assert state(a) == state(b)
    a.logout()
    b.logout()

