"""Big headers and full disks: every message stays visible and whole, and reading goes on.

The scanner parses a header block of any size a chunk at a time, so a
message with a 300 KB header and a 4 MB body, or 3,000 Received: lines, is
indexed like any other (its X-UID is found, the messages after it are
seen); mail.local keeps a header line of any length whole.  On a full disk
mail can still be read, flags set in place, and a refresh that fails never
ends an IMAP session.
"""

import os
import re
import subprocess
import sys

import peers
import pytest
from imap_support import imapd
from pop3lib import Pop3d, wire_octets

from mailsuite.lda.deliver import open_spool


def big_header(lines, width=100):
    return b"".join(b"X-Pad-%05d: %s\n" % (n, b"p" * (width - 15)) for n in range(lines))


def imap_view(sandbox):
    session = imapd(sandbox)
    try:
        session.select("INBOX")
        typ, data = session.fetch("1:*", "(UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        return [(int(re.search(rb"UID (\d+)", d[0]).group(1)), int(re.search(rb"SIZE (\d+)", d[0]).group(1)),
                 d[1].strip().decode()) for d in data if isinstance(d, tuple)]
    finally:
        session.logout()


def test_a_300k_header_and_a_4m_body_hide_nothing(sandbox):
    sandbox.deliver("alice", b"Subject: first\n\nsmall\n")
    sandbox.deliver("alice", b"Subject: huge\n" + big_header(3000) + b"\n" + b"body line\n" * 400_000)
    for n in range(3):
        sandbox.deliver("alice", b"Subject: after %d\n\nsmall\n" % n)
    view = imap_view(sandbox)
    assert [s for _, _, s in view] == ["Subject: first", "Subject: huge"] + [f"Subject: after {n}" for n in range(3)]
    assert [uid for uid, _, _ in view] == [1, 2, 3, 4, 5]
    session = imapd(sandbox)
    typ, data = session.append("INBOX", None, None, b"Subject: appended\r\n\r\nx\r\n")
    session.logout()
    assert typ == "OK" and b"APPENDUID" in data[0]
    server = Pop3d(sandbox)
    try:
        pop = server.client("alice")
        listing = [int(line.split()[1]) for line in pop.list()[1]]
        assert len(listing) == 6 and listing[:5] == [size for _, size, _ in view]
        response, lines, _ = pop.retr(2)
        assert int(response.split()[1]) == wire_octets(lines) == listing[1]
        pop.quit()
    finally:
        server.stop()


def test_uids_of_a_message_with_3000_received_lines_stick(sandbox):
    received = b"".join(b"Received: from relay%d.example.org (relay%d.example.org [192.0.2.1])\n"
                        b"\tby relay%d.example.org with ESMTP; Mon, 1 Jan 2024 00:00:00 +0000\n"
                        % (n, n, n + 1) for n in range(3000))        # about 350 KB
    sandbox.deliver("alice", b"Subject: many hops\n" + received + b"\nbody\n")
    sandbox.deliver("alice", b"Subject: another\n" + received + b"\nbody\n")
    first = imap_view(sandbox)
    stamp = os.stat(sandbox.spool("alice")).st_ctime_ns
    assert imap_view(sandbox) == first and [uid for uid, _, _ in first] == [1, 2]
    assert os.stat(sandbox.spool("alice")).st_ctime_ns == stamp          # the second SELECT wrote nothing
    server = Pop3d(sandbox)
    try:
        pop = server.client("alice")
        uidls = [line.split()[1] for line in pop.uidl()[1]]
        assert len(set(uidls)) == 2
        pop.dele(1)
        pop.quit()
    finally:
        server.stop()
    assert [s for _, _, s in imap_view(sandbox)] == ["Subject: another"]


def test_a_header_bigger_than_a_scan_chunk(sandbox):
    sandbox.deliver("alice", b"Subject: giant header\n" + big_header(60_000) + b"\nbody\n")   # 6 MB
    sandbox.deliver("alice", b"Subject: after\n\nsmall\n")
    assert [(uid, s) for uid, _, s in imap_view(sandbox)] == [(1, "Subject: giant header"), (2, "Subject: after")]


def test_mail_local_keeps_a_header_line_over_a_mebibyte_whole(sandbox):
    long_line = b"X-Long: " + b"l" * (1 << 20) + b"tail\n"
    done = sandbox.run("mail.local", "alice",
                       input=b"Subject: long\n" + long_line + b"Content-Type: text/plain; charset=utf-8\n\nbody\n")
    assert done.returncode == 0, done.stderr
    with open_spool(sandbox.cfg, sandbox.user("alice")) as box:
        [msg] = box.scan().messages
        header = box.read(msg, msg.header, msg.body)
        assert long_line in header and b"\nContent-Type: text/plain; charset=utf-8\n" in header
        assert box.read(msg, msg.body, msg.end) == b"body\n"


@pytest.fixture
def full_disk(sandbox, tmp_path):
    """The sandbox's spool on a small tmpfs with two messages, then filled up to the last block."""
    peers.require_root("it mounts a tmpfs")
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,nr_inodes=64", "tmpfs", str(mount_point)]).returncode:
        peers.unavailable("mounting a tmpfs", "mount -t tmpfs failed")
    try:
        conf = sandbox.dir / "mailsuite.conf"
        conf.write_text(conf.read_text().replace(f"spool_dir = {sandbox.dir}/spool", f"spool_dir = {mount_point}"))
        for subject in (b"one", b"two"):
            assert sandbox.run("mail.local", "alice", input=b"Subject: %s\n\nbody\n" % subject).returncode == 0
        session = imapd(sandbox)
        session.select("INBOX")                             # UIDs given while there is room
        session.logout()
        fd = os.open(mount_point / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while os.write(fd, b"f" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode:
            subprocess.run(["umount", "--lazy", str(mount_point)])    # a process of a failed test still in it


@pytest.mark.root
def test_a_full_disk_still_lets_everyone_read(sandbox, full_disk):
    session = imapd(sandbox)
    typ, data = session.select("INBOX")
    assert typ == "OK" and data == [b"2"]
    assert session.status("INBOX", "(MESSAGES UIDNEXT)")[0] == "OK"
    typ, _ = session.store("1", "+FLAGS", r"(\Seen)")      # in place: no new block needed
    assert typ == "OK"
    typ, data = session.append("INBOX", None, None, b"Subject: no room\r\n\r\n" + b"x" * 100_000 + b"\r\n")
    assert typ == "NO" and b"full" in data[0]
    typ, data = session.noop()                               # the session goes on
    assert typ == "OK"
    session.logout()
    server = Pop3d(sandbox)
    try:
        pop = server.client("alice")
        assert len(pop.list()[1]) == 2 and b"Subject: one" in pop.retr(1)[1]
        pop.quit()
    finally:
        server.stop()
    done = sandbox.run("mail", "-u", "alice", "-H")
    assert done.returncode == 0 and b"one" in done.stdout, done.stderr
    with open_spool(sandbox.cfg, sandbox.user("alice")) as box:
        assert "R" in box.scan().messages[0].flags


def test_a_refresh_that_fails_does_not_end_the_session(sandbox):
    """The mailbox turns unreadable between two commands (here: a lock held too long): the session goes on."""
    from pop3lib import configure
    sandbox.deliver("alice", b"Subject: one\n\nx\n")
    configure(sandbox, {"mailsuite": {"lock_timeout": "1s"}})
    session = imapd(sandbox)
    session.select("INBOX")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_WRITE_LOCK, str(sandbox.spool("alice"))],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"locked\n"
        assert session.noop()[0] == "OK"
        assert session.capability()[0] == "OK"
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    typ, data = session.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK" and b"Subject: one" in data[0][1]
    session.logout()


HOLD_WRITE_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX)
os.pwrite(fd, b"\\nFrom x Mon Jan  1 00:00:00 2024\\nSubject: half\\n", os.fstat(fd).st_size)   # a change to look at
print("locked", flush=True)
sys.stdin.read()
"""


def test_lmtp_keeps_a_line_over_a_mebibyte_whole(sandbox):
    """The LMTP reader takes a long line in pieces: a piece that starts with a dot is not a line that does."""
    long_line = b"X-Long: " + b"l" * ((1 << 20) - 8) + b".tail"
    script = (b"LHLO test\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<alice@localhost>\r\nDATA\r\n"
              b"Subject: long\r\n" + long_line + b"\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    done = sandbox.run("mail.local", "-l", input=script)
    assert b"250 2.0.0 <alice@localhost>" in done.stdout, done.stdout
    with open_spool(sandbox.cfg, sandbox.user("alice")) as box:
        [msg] = box.scan().messages
        assert long_line + b"\n" in box.read(msg, msg.header, msg.body)


@pytest.mark.root
def test_quit_on_a_full_disk_changes_nothing_and_says_which_file(sandbox, full_disk):
    """Reading, deleting, then q with no room for the crash record: the spool is byte for byte as it was."""
    spool = full_disk / "alice"
    before = spool.read_bytes()
    done = sandbox.run("mail", "-u", "alice", input=b"p 1\nd 2\nq\nx\n")
    assert done.returncode == 0
    assert f"mail: {spool}: No space left on device; nothing changed (quit again, or exit)\n" in done.stderr.decode()
    assert spool.read_bytes() == before
