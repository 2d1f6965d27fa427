"""mbsync (isync) keeps a local Maildir in step with imapd, both ways.

mbsync reaches imapd through its `Tunnel` (a preauthenticated session on
stdin/stdout, as over ssh).  After changes on both sides a second sync
must move only the changes: messages already copied keep their files.
"""

import os
from pathlib import Path

import peers
from imap_support import deliver, imapd, maildir_files, mbsync, mbsync_config

pytestmark = peers.needs("mbsync")


def test_mbsync_two_way(sandbox, tmp_path):
    for n in range(3):
        deliver(sandbox, "alice", b"Subject: inbox %d\nMessage-ID: <%d@x>\n\nbody %d\n" % (n, n, n))
    imap = imapd(sandbox)
    imap.create("Work")
    imap.append("Work", r"(\Seen)", None, b"Subject: work\r\n\r\nwork\r\n")
    imap.logout()

    rc, local = mbsync_config(sandbox, tmp_path)
    mbsync(sandbox, rc)
    first = maildir_files(local / "INBOX")
    assert len(first) == 3 and len(maildir_files(local / "Work")) == 1

    # changes on the server: a flag, a new delivery
    imap = imapd(sandbox)
    imap.select("INBOX")
    imap.store("1", "+FLAGS", r"(\Flagged)")
    imap.logout()
    deliver(sandbox, "alice", b"Subject: inbox new\nMessage-ID: <new@x>\n\nnew\n")
    # changes here: read one, delete one
    names = sorted(first)
    for sub in ("new", "cur"):
        for entry in list((local / "INBOX" / sub).iterdir()):
            if entry.name.startswith(names[1]):
                os.rename(entry, local / "INBOX" / "cur" / (names[1] + ":2,S"))
            if entry.name.startswith(names[2]):
                entry.unlink()

    mbsync(sandbox, rc)
    second = maildir_files(local / "INBOX")
    assert len(second) == 3
    assert set(first) - {names[2]} <= set(second)  # nothing fetched again
    assert "F" in second[names[0]] and "S" in second[names[1]]

    imap = imapd(sandbox)
    imap.select("INBOX")
    typ, data = imap.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    summary = [(d[0], d[1]) for d in data if isinstance(d, tuple)]
    assert len(summary) == 3
    subjects = [s for _, s in summary]
    assert b"Subject: inbox 2\r\n\r\n" not in subjects and b"Subject: inbox new\r\n\r\n" in subjects
    flags = {s: f for f, s in summary}
    assert b"\\Flagged" in flags[b"Subject: inbox 0\r\n\r\n"] and b"\\Seen" in flags[b"Subject: inbox 1\r\n\r\n"]
    imap.logout()

    third = mbsync(sandbox, rc)
    assert maildir_files(local / "INBOX") == second
    assert b"Error" not in third.stderr
    assert Path(local / "Work").exists()
