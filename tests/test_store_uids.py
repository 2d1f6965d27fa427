"""UIDs sync clients can trust: a UID is never given to two messages, UIDVALIDITY never changes under them.

The UID state (UIDVALIDITY, UIDLAST) lives in the first message's
X-IMAPbase.  When the last message goes, it stays in a pseudo-message (UW
IMAP's and Dovecot's "FOLDER INTERNAL DATA"), hidden from every client; when
a mail reader deletes the first message, and X-IMAPbase with it, the index
cache still knows it.  fetchmail (UIDL, keep mode), mbsync and Dovecot
check the outcome.
"""

import os
import subprocess
import time

import peers
import pytest
from conftest import subjects
from imap_support import (
    RUN_AS,
    Dovecot,
    RawClient,
    deliver,
    imapd,
    maildir_files,
    mbsync,
    mbsync_config,
    set_imap_option,
)
from pop3lib import Pop3d, deliver_to, fetchmail, message
from tmux import mutt


def uid_state(sandbox, **kw):
    """(UIDVALIDITY, UIDNEXT) of INBOX as imapd reports it."""
    session = imapd(sandbox, **kw)
    try:
        session.select("INBOX", readonly=True)
        return (int(session.untagged_responses["UIDVALIDITY"][-1]), int(session.untagged_responses["UIDNEXT"][-1]))
    finally:
        session.logout()


def empty_with(how, sandbox, server):
    if how == "imap":
        session = imapd(sandbox)
        session.select("INBOX")
        session.store("1:*", "+FLAGS", r"(\Deleted)")
        session.expunge()
        session.logout()
    elif how == "pop3":
        pop = server.client("alice")
        for n in range(1, len(pop.list()[1]) + 1):
            pop.dele(n)
        assert pop.quit().startswith(b"+OK")
    else:
        done = sandbox.run("mail", "-u", "alice", input=b"d *\nq\n")
        assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("how", ["imap", "pop3", "mail"])
def test_fetchmail_keeps_getting_mail_after_the_mailbox_was_emptied(sandbox, tmp_path, how):
    """Refilled at once, the mailbox must not give the new message the old (UIDVALIDITY, UID): fetchmail would skip it."""
    server = Pop3d(sandbox)
    try:
        deliver_to(sandbox, "alice", message("first"))
        fetchmail(sandbox, server, tmp_path, "--keep")
        before = uid_state(sandbox)
        empty_with(how, sandbox, server)
        assert subjects(sandbox.spool("alice")) == []
        deliver_to(sandbox, "alice", message("second"))
        fetchmail(sandbox, server, tmp_path, "--keep")
    finally:
        server.stop()
    assert subjects(sandbox.spool("bob")) == ["first", "second"]
    assert uid_state(sandbox) == (before[0], before[1] + 1)


def delete_first_with(reader, sandbox):
    """A mail reader on the spool deletes message 1 (taking X-IMAPbase with it) and rewrites the file."""
    spool = sandbox.spool("alice")
    if reader == "mutt":
        session = mutt(spool, sandbox.home("alice"), readonly=False,
                       settings="set delete=yes\nset resolve=no\nset wait_key=no\n")
        try:
            session.wait_for(lambda text: "inbox 2" in text)
            session.keys("d", "q")
            deadline = time.monotonic() + 20
            while b"inbox 0" in spool.read_bytes() and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            session.close()
    else:
        done = subprocess.run([peers.require("s-nail"), "-:/", "-N", "-f", str(spool)], input=b"d 1\nq\n",
                              capture_output=True, timeout=30, env=dict(os.environ, HOME=str(sandbox.home("alice"))))
        assert done.returncode == 0, done.stderr
    assert b"inbox 0" not in spool.read_bytes() and b"X-IMAPbase" not in spool.read_bytes()


@pytest.mark.parametrize("reader", ["mutt", "s-nail"])
def test_mbsync_goes_on_when_a_mail_reader_deletes_message_1(sandbox, tmp_path, reader):
    peers.require("mbsync")
    for n in range(3):
        deliver(sandbox, "alice", b"Subject: inbox %d\nMessage-ID: <%d@x>\n\nbody %d\n" % (n, n, n))
    rc, local = mbsync_config(sandbox, tmp_path)
    mbsync(sandbox, rc)
    first = maildir_files(local / "INBOX")
    state = uid_state(sandbox)
    delete_first_with(reader, sandbox)
    assert uid_state(sandbox) == state
    deliver(sandbox, "alice", b"Subject: inbox new\nMessage-ID: <new@x>\n\nnew\n")
    mbsync(sandbox, rc)                                   # "UIDVALIDITY genuinely changed" fails this
    second = maildir_files(local / "INBOX")
    assert len(second) == 3 and len(set(first) & set(second)) == 2      # the kept two are not fetched again
    assert uid_state(sandbox) == (state[0], state[1] + 1)


def test_an_emptied_mailbox_reads_the_same_in_dovecot(shared_sandbox):
    sb = shared_sandbox
    for n in range(2):
        deliver(sb, "alice", b"Subject: %d\n\nx\n" % n, as_user=RUN_AS)
    session = imapd(sb, as_user=RUN_AS)
    session.select("INBOX")
    session.store("1:*", "+FLAGS", r"(\Deleted)")
    session.expunge()
    session.logout()
    ours = uid_state(sb, as_user=RUN_AS)
    dovecot = Dovecot(sb, run_as=RUN_AS).session()
    typ, data = dovecot.select("INBOX", readonly=True)
    assert int(data[0]) == 0                              # the pseudo-message is hidden there too
    theirs = (int(dovecot.untagged_responses["UIDVALIDITY"][-1]), int(dovecot.untagged_responses["UIDNEXT"][-1]))
    dovecot.logout()
    assert theirs == ours == (ours[0], 3)


def test_uw_pseudo_message_keeps_one_x_imap_header_and_dovecot_reuses_no_uid(shared_sandbox):
    sb = shared_sandbox
    spool = sb.spool("alice")
    spool.write_bytes(b"From MAILER-DAEMON Mon Jan  1 00:00:00 2024\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n"
                      b"From: Mail System Internal Data <MAILER-DAEMON@example.org>\n"
                      b"Subject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\n"
                      b"X-IMAP: 1700000000 0000000005\nStatus: RO\n\ninternal data\n\n"
                      b"From a@b Mon Jan  1 00:00:00 2024\nSubject: old\nX-UID: 5\nStatus: RO\n\nold\n\n")
    if RUN_AS:
        os.chown(spool, *_ids(RUN_AS))
    session = imapd(sb, as_user=RUN_AS)
    uids = [session.append("INBOX", None, None, b"Subject: new %d\r\n\r\nx\r\n" % n)[1][0].split()[2]
            for n in range(2)]
    session.logout()
    assert uids == [b"6]", b"7]"]
    text = spool.read_bytes()
    assert text.count(b"\nX-IMAP:") == 1 and b"\nX-IMAP: 1700000000 0000000007" in text
    dovecot = Dovecot(sb, run_as=RUN_AS).session()
    dovecot.select("INBOX")
    assert dovecot.untagged_responses["UIDNEXT"][-1] == b"8"
    assert dovecot.append("INBOX", None, None, b"Subject: from dovecot\r\n\r\nx\r\n")[1][0].split()[2] == b"8]"
    dovecot.logout()
    session = imapd(sb, as_user=RUN_AS)
    session.select("INBOX")
    typ, data = session.fetch("1:*", "(UID)")
    session.logout()
    assert [d.split()[-1] for d in data] == [b"5)", b"6)", b"7)", b"8)"]


def _ids(user):
    import pwd
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def test_delete_then_create_within_a_second_gives_a_new_uidvalidity(shared_sandbox):
    sb = shared_sandbox
    session = imapd(sb, as_user=RUN_AS)
    values = []
    for _ in range(3):
        assert session.create("Work")[0] == "OK"
        session.append("Work", None, None, b"Subject: x\r\n\r\nx\r\n")
        values.append(status(session, "Work")["UIDVALIDITY"])
        assert session.delete("Work")[0] == "OK"
    session.create("Work")
    last = status(session, "Work")
    session.logout()
    assert len(set(values)) == 3 and last["UIDVALIDITY"] not in values and last["UIDNEXT"] == 1
    dovecot = Dovecot(sb, run_as=RUN_AS).session()
    theirs = status(dovecot, "Work")
    dovecot.logout()
    assert (theirs["UIDVALIDITY"], theirs["MESSAGES"]) == (last["UIDVALIDITY"], 0)


def status(session, name):
    typ, data = session.status(name, "(MESSAGES UIDVALIDITY UIDNEXT)")
    assert typ == "OK", data
    items = data[0].split(b"(", 1)[1].rstrip(b")").split()
    return {items[i].decode(): int(items[i + 1]) for i in range(0, len(items), 2)}


def test_a_session_that_selected_a_missing_inbox_sees_new_mail(sandbox):
    set_imap_option(sandbox, "idle_poll", "1s")           # no file to watch yet: IDLE looks every second
    sandbox.spool("alice").unlink()
    session = imapd(sandbox)
    session.select("INBOX")
    validity = int(session.untagged_responses["UIDVALIDITY"][-1])
    assert validity > 1
    idler = RawClient(sandbox)
    idler.send(b"a SELECT INBOX")
    assert b"[UIDVALIDITY %d]" % validity in idler.wait_for(b"a OK")
    idler.send(b"b IDLE")
    idler.wait_for(b"+ idling")
    deliver(sandbox, "alice", b"Subject: first ever\n\nhello\n")
    idler.wait_for(b"* 1 EXISTS", timeout=120)
    idler.send(b"DONE")
    idler.wait_for(b"b OK")
    idler.send(b"c LOGOUT")
    idler.close()
    typ, data = session.noop()
    assert session.untagged_responses["EXISTS"][-1] == b"1"
    typ, data = session.uid("FETCH", "1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK" and b"Subject: first ever" in data[0][1]
    session.logout()
    assert uid_state(sandbox) == (validity, 2)
