"""Other programs rewrite the spool under our sessions: nothing is written at a stale offset, nothing read from one.

mutt rewrites an mbox in place and sets its mtime back; another IMAP
client, `mail` or POP3 session expunges; a delivery runs meanwhile.  Every
session of ours must notice (the index key includes the ctime, which no
program can set back, and the bytes at an offset are checked before they
are written or served) and find its messages again.
"""

import os
import poplib
import re
import subprocess
import sys
import time

import pexpect
import pytest
from imap_support import RawClient, imapd, imapd_command
from tmux import mutt

from mailsuite.lda.deliver import open_spool

MUTT_SETTINGS = "set resolve=no\nset mark_old=no\nset wait_key=no\nset beep=no\n"


def deliver_three(sandbox):
    for subject in ("one", "two", "three"):
        sandbox.deliver("alice", b"Subject: %s\nMessage-ID: <%s@example.org>\n\nbody of %s\n" % ((subject.encode(),) * 3))


def flag_with_mutt(sandbox, *moves):
    """mutt toggles \\Flagged on the messages reached by MOVES (keys before each F), syncs and quits."""
    session = mutt(sandbox.spool("alice"), sandbox.home("alice"), readonly=False, settings=MUTT_SETTINGS)
    try:
        assert "three" in session.wait_for(lambda text: "three" in text), session.screen()
        for move in moves:
            if move:
                session.keys(move)
            session.keys("F")
        assert flagged_rows(session.wait_for(lambda text: flagged_rows(text) == 1)) == 1, session.screen()
        before = os.stat(sandbox.spool("alice")).st_ctime_ns
        session.keys("$")
        deadline = time.monotonic() + 20
        while os.stat(sandbox.spool("alice")).st_ctime_ns == before and time.monotonic() < deadline:
            time.sleep(0.05)
        session.keys("q")
    finally:
        session.close()


def flagged_rows(screen):
    """Rows of mutt's index marked flagged ("!")."""
    return sum(1 for line in screen.splitlines() if re.match(r"\s+\d+ .{0,4}!", line))


def flags_by_subject(sandbox):
    with open_spool(sandbox.cfg, sandbox.user("alice")) as box:
        index = box.scan()
        return {re.search(rb"Subject: (\w+)", box.read(m)).group(1).decode(): (m.uid, "".join(sorted(m.flags)))
                for m in index.messages}


def test_same_size_mutt_rewrite_with_its_mtime_set_back_under_an_open_session(sandbox):
    """mutt moves \\Flagged from message 1 to message 2: same size, same mtime; our STORE must not write blind."""
    deliver_three(sandbox)
    session = imapd(sandbox)
    try:
        session.select("INBOX")
        flag_with_mutt(sandbox, "")                          # first sync: mutt's own headers, and its mtime
        session.noop()
        before = os.stat(sandbox.spool("alice"))
        flag_with_mutt(sandbox, "", "j")                      # unflag 1, flag 2
        after = os.stat(sandbox.spool("alice"))
        assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
        typ, _ = session.uid("STORE", "2", "+FLAGS", r"(\Seen)")
        assert typ == "OK"
        session.logout()
    finally:
        session.shutdown()
    text = sandbox.spool("alice").read_bytes()
    assert text.count(b"\nMessage-ID: <") == 3 and b"Message-ID:Status" not in text
    assert flags_by_subject(sandbox) == {"one": (1, "O"), "two": (2, "FOR"), "three": (3, "O")}


def test_pop3_serves_the_right_bytes_after_another_program_expunged(sandbox):
    """The snapshot's offsets are stale: RETR finds each message again, by UID, with the octets it announced."""
    from pop3lib import Pop3d, wire_octets
    for n, size in ((1, 30), (2, 5), (3, 12), (4, 1)):
        sandbox.deliver("alice", b"Subject: pop%d\n\n" % n + b"line of message %d\n" % n * size)
    server = Pop3d(sandbox)
    try:
        pop = server.client("alice")
        other = imapd(sandbox)
        other.select("INBOX")
        other.store("1", "+FLAGS", r"(\Deleted)")
        other.expunge()
        other.logout()
        response, lines, _ = pop.retr(3)
        assert b"Subject: pop3" in lines and lines.count(b"line of message 3") == 12
        assert int(response.split()[1]) == wire_octets(lines)
        with pytest.raises(poplib.error_proto, match="removed by another program"):
            pop.retr(1)
        pop.dele(2)
        assert pop.quit().startswith(b"+OK")
    finally:
        server.stop()
    assert list(flags_by_subject(sandbox)) == ["pop3", "pop4"]


def test_mail_shows_the_right_message_when_another_one_took_its_place(mail_sandbox):
    """Same size, same From_ line: after another program's expunge, message 3 sits where message 2 was."""
    from mailsuite.core import config
    from mailsuite.store.mailbox import Mailbox
    sb = mail_sandbox
    sb.spool().write_bytes(b"".join(b"From bob@localhost Mon Nov 30 02:02:04 2026\nSubject: same size %d\n"
                                    b"Message-ID: <m%d@example.org>\n\nbody number %d\n\n" % (n, n, n)
                                    for n in (1, 2, 3)))
    store = Mailbox(str(sb.spool()), config.load(sb.conf))
    with store.locked():
        uids = [m.uid for m in store.sync().messages]
    child = sb.spawn()
    child.expect(r"\? ")
    with store.locked():                                 # the other client drops message 1
        store.sync(expunge=[uids[0]])
    store.close()
    child.sendline("p 2")
    child.expect("body number [23]")
    assert child.after == "body number 2"
    child.expect(r"\? ")
    child.sendline("x")
    child.expect(pexpect.EOF)


def test_no_phantom_expunge_while_another_program_rewrites_the_file(sandbox):
    """An IMAP session polls while another program is half-way through copying a rewritten file into place.

    The other program grows the first message (as a flag change that outgrows
    its padding does), so every later message moves up; it stops half-way,
    holding its locks.  A refresh that read the file now would miss the
    messages between the copied part and the old one and announce them
    expunged; ours waits for the lock and announces nothing.
    """
    for n in range(40):
        sandbox.deliver("alice", b"Subject: filler %d\n\n" % n + b"line of filler\n" * 20)
    session = RawClient(sandbox)
    session.send(b"s SELECT INBOX")
    session.wait_for(b"s OK")
    uids = fetch_uids(session, b"1:*")
    writer = subprocess.Popen([sys.executable, "-c", HALF_WAY_REWRITE, str(sandbox.spool("alice"))],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert writer.stdout.readline() == b"half-way\n"
        session.send(b"n NOOP")
        answered = session.wait_for(b"n OK", timeout=2, missing_ok=True)     # the old code answered here
        writer.stdin.write(b"go on\n")
        writer.stdin.close()
        assert writer.wait(timeout=60) == 0
        text = answered or session.wait_for(b"n OK")
        gone = [uids[int(n) - 1] for n in re.findall(rb"\* (\d+) EXPUNGE", text)]
        uids, more = noop(session, [u for u in uids if u not in gone])
    finally:
        session.send(b"z LOGOUT")
        session.close()
    with open_spool(sandbox.cfg, sandbox.user("alice")) as box:
        present = [m.uid for m in box.scan().messages]
    assert gone + more == [] and uids == present


HALF_WAY_REWRITE = """
import fcntl, os, sys
path = sys.argv[1]
fd = os.open(path, os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX)
lock = os.open(path + ".lock", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
os.write(lock, b"%d\\n" % os.getpid())
data = os.pread(fd, os.fstat(fd).st_size, 0)
new = data.replace(b"Subject: filler 0\\n", b"Subject: filler 0\\nX-Grown: " + b"y" * 3000 + b"\\n", 1)
os.pwrite(fd, new[:len(new) // 2], 0)
print("half-way", flush=True)
sys.stdin.readline()
os.pwrite(fd, new[len(new) // 2:], len(new) // 2)
os.fsync(fd)
os.unlink(path + ".lock")
"""


def fetch_uids(session, sequence):
    session.send(b"f UID FETCH " + sequence + b" (UID)")
    return [int(u) for u in re.findall(rb"UID (\d+)", session.wait_for(b"f OK"))]


def noop(session, uids):
    """Bring UIDS up to date with a NOOP; the UIDs it announced expunged."""
    session.send(b"n NOOP")
    text = session.wait_for(b"n OK")
    expunged = []
    for number, kind in re.findall(rb"\* (\d+) (EXPUNGE|EXISTS)", text):
        if kind == b"EXPUNGE":
            expunged.append(uids.pop(int(number) - 1))
        elif int(number) > len(uids):
            uids = uids + fetch_uids(session, b"%d:*" % ((uids[-1] if uids else 0) + 1))
    return uids, expunged


def test_fetch_does_not_hold_the_lock_while_the_client_does_not_read(sandbox):
    """A client asks for whole messages and stops reading: deliveries to its mailbox still go through."""
    from pop3lib import configure
    for n in range(4):
        sandbox.deliver("alice", b"Subject: big %d\n\n" % n + (b"z" * 999 + b"\n") * 1000)
    configure(sandbox, {"mailsuite": {"lock_timeout": "3s"}})
    session = subprocess.Popen(imapd_command(sandbox), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               env=sandbox.env)
    try:
        session.stdin.write(b"a SELECT INBOX\r\nb FETCH 1:* (BODY.PEEK[])\r\n")
        session.stdin.flush()
        assert wait_until(lambda: pipe_full(session.stdout)), "imapd never filled the pipe"
        done = sandbox.run("mail.local", "alice", input=b"Subject: while fetching\n\nx\n")
        assert done.returncode == 0, done.stderr
        session.stdin.write(b"c LOGOUT\r\n")
        session.stdin.close()
        output = session.stdout.read()
        assert session.wait(timeout=60) == 0
    finally:
        if session.poll() is None:
            session.kill()
            session.wait()
    assert output.count(b"Subject: big") == 4 and b"b OK" in output
    assert list(flags_by_subject(sandbox)).count("while") == 1


def pipe_full(pipe):
    """Whether a pipe is (all but a page) full: its writer is stuck until someone reads."""
    import array
    import fcntl
    import termios
    count = array.array("i", [0])
    fcntl.ioctl(pipe.fileno(), termios.FIONREAD, count)
    return count[0] >= fcntl.fcntl(pipe.fileno(), fcntl.F_GETPIPE_SZ) - 4096


def wait_until(predicate, timeout=30):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_rewrite_the_index_key_cannot_see_is_caught_by_the_bytes(sandbox, monkeypatch):
    """On a file system whose timestamps cannot tell two states apart, the bytes at the offsets still do.

    The index key is cut to device, inode and size; another program takes a
    header line out of message 1 and puts one as long into message 2, so
    message 2 moves and the size stays.  Its flags must not be written at
    the old offsets, and an IMAP FETCH must not send bytes from there.
    """
    from mailsuite.imap.mailboxes import MailStore
    from mailsuite.imap.selected import FlagChange, SelectedMailbox
    from mailsuite.store import mailbox as mbox
    monkeypatch.setattr(mbox, "_key", lambda st: (st.st_dev, st.st_ino, st.st_size, 0, 0))
    for subject in (b"aaa", b"bbb"):
        sandbox.deliver("alice", b"Subject: %s\nMessage-ID: <%s@x>\n\nbody %s\n" % (subject, subject, subject))
    selected = SelectedMailbox(MailStore(sandbox.cfg, sandbox.user("alice")), "INBOX", False)
    data = sandbox.spool("alice").read_bytes()
    moved = data.replace(b"Message-ID: <aaa@x>\n", b"", 1).replace(b"Subject: bbb\n", b"Subject: bbb\nX-Moved: 0123456789\n", 1)
    assert len(moved) == len(data)
    with open(sandbox.spool("alice"), "r+b") as f:
        f.write(moved)
    uid = selected.uids[1]
    copies = None
    try:
        with selected.box.reading():
            msg = selected.message(uid)
            with pytest.raises(mbox.StaleOffsets):
                selected.box.copies([msg])
        selected.forget_positions()
        with selected.box.reading():
            selected.refresh_positions()
            msg = selected.message(uid)
            copies = selected.box.copies([msg])
            assert copies.read(msg).startswith(b"Return-Path: <s@example.org>\nDelivered-To: alice@localhost\n"
                                               b"Subject: bbb\nX-Moved: 0123456789\n")
    finally:
        if copies:
            copies.close()
    with open(sandbox.spool("alice"), "r+b") as f:                  # and once more, unseen
        f.write(data)
    selected.change_flags(uid, FlagChange("+", frozenset("R"), ()))
    selected.write_back()
    selected.close()
    assert sandbox.spool("alice").read_bytes().count(b"\nMessage-ID: <") == 2
    assert flags_by_subject(sandbox) == {"aaa": (1, "O"), "bbb": (2, "OR")}
