"""Crash records: durable before the mailbox changes, the owner's to finish, nobody else's to forge.

An append record is fsynced, with its directory, before the mailbox is
touched.  Root's mail.local gives its records to the mailbox owner, so the
owner's own imapd can finish a killed delivery on Debian's 2775 spool (and
empties the record it may not remove); a record the reader cannot read is a
temporary failure, never "nothing to do"; a record another user planted
(a 1777 spool) is logged and ignored, never applied.
"""

import os
import re
import shutil
import subprocess

import pytest
from conftest import REPO
from dying import run_dying
from procs import system_installation
from stage import stage

from mailsuite.core import fileio
from mailsuite.lda.deliver import deliver, open_spool
from mailsuite.store.prepare import prepare_bytes

DELIVER = """
prepared = prepare_bytes(b"Subject: killed\\n\\n" + b"a line of the killed delivery\\n" * 300)
deliver(cfg, user, prepared, sender="s@example.org")
"""


def test_the_append_record_is_durable_before_the_mailbox_changes(sandbox, monkeypatch):
    """Record written, fsynced with its directory, then the mailbox; a power cut never leaves half a message."""
    events = []
    spool = str(sandbox.spool("alice"))

    def name(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        return "mailbox" if path == spool else "record" if ".alice.append" in path else \
            "spool dir" if path == os.path.dirname(spool) else path

    def logged(kind, real):
        def call(fd, *args):
            events.append((kind, name(fd)))
            return real(fd, *args)
        return call

    monkeypatch.setattr(fileio, "pwrite_all", logged("write", fileio.pwrite_all))
    monkeypatch.setattr(fileio, "truncate", logged("truncate", fileio.truncate))
    monkeypatch.setattr(os, "fsync", logged("fsync", os.fsync))
    monkeypatch.setattr(os, "fdatasync", logged("fsync", os.fdatasync))
    monkeypatch.setattr(os, "write", logged("write", os.write))
    (sandbox.dir / "spool" / ".alice.append").unlink(missing_ok=True)     # the first append makes it
    prepared = prepare_bytes(b"Subject: durable\n\nbody\n")
    deliver(sandbox.cfg, sandbox.user("alice"), prepared, sender="s@example.org")
    prepared.close()
    order = [e for e in events if e[1] in ("record", "spool dir", "mailbox")]
    first_change = next(i for i, e in enumerate(order) if e[1] == "mailbox")
    assert order.index(("fsync", "spool dir")) < order.index(("write", "record"))  # the record file, made once
    assert order.index(("write", "record")) < order.index(("fsync", "record")) < first_change
    assert order[-2:] == [("fsync", "mailbox"), ("write", "record")]              # marked done once the mail is safe


@pytest.fixture
def debian_spool(real_users):
    """A system installation with Debian's 2775 root:mail spool and one real user, whose spool holds one message."""
    user = real_users.add("rec")
    top, conf = system_installation("imap", {user.name: user.uid})
    (top / "home" / user.name).rmdir()
    conf.write_text(conf.read_text().replace(f"{top}/home/{user.name}", str(user.home)))
    passwd = top / "passwd"
    passwd.write_text(passwd.read_text().replace(f"{top}/home/{user.name}", str(user.home)))
    yield top, conf, user
    shutil.rmtree(top, ignore_errors=True)


def kill_root_delivery(top, conf, user):
    """Root's delivery killed half-way (after the file was extended): its record is left, given to the owner."""
    spool = top / "spool" / user.name
    original = spool.read_bytes()
    for kill_at in range(1, 100):
        assert run_dying(str(REPO / "lib"), str(conf), DELIVER, kill_at, user=user.name)
        record = top / "spool" / f".{user.name}.append"
        if record.exists() and spool.stat().st_size > len(original):
            return record, original
        _recover_as_root(conf, user)
        assert spool.read_bytes() == original
    raise AssertionError("the delivery was never killed half-way")


def _recover_as_root(conf, user):
    from mailsuite.core import config
    from mailsuite.core.users import UserDB
    cfg = config.load(str(conf))
    with open_spool(cfg, UserDB(cfg).lookup(user.name)) as box, box.locked():
        pass


def imapd_as(user, conf, script):
    done = user.run([stage().program("imapd"), "-C", str(conf), "--preauth", user.name], input=script)
    return done.stdout


@pytest.mark.root
def test_the_owner_finishes_root_s_killed_delivery_and_root_keeps_what_the_owner_did(debian_spool):
    top, conf, user = debian_spool
    record, original = kill_root_delivery(top, conf, user)
    assert record.stat().st_uid == user.uid                      # root gave its record to the owner
    mine = b"Subject: mine\r\n\r\nmine\r\n"
    out = imapd_as(user, conf, b"a SELECT INBOX\r\nb FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n"
                               b"c APPEND INBOX {%d+}\r\n%s\r\nd LOGOUT\r\n" % (len(mine), mine))
    assert b"* 1 EXISTS" in out and b"Subject: for " in out and b"killed" not in out, out
    assert b"c OK [APPENDUID" in out, out
    assert record.read_bytes()[:1] == b"\n"                      # finished: marked done
    done = subprocess.run([stage().program("mail.local"), "-C", str(conf), user.name],
                          input=b"Subject: next\n\nnext\n", capture_output=True)
    assert done.returncode == 0, done.stderr
    assert record.read_bytes()[:1] == b"\n"
    spool = (top / "spool" / user.name).read_bytes()
    assert [s for s in re.findall(rb"\nSubject: (\w+)", spool)] == [b"for", b"mine", b"next"]
    assert b"killed delivery" not in spool


@pytest.mark.root
def test_a_record_the_reader_cannot_read_is_a_temporary_failure(debian_spool):
    top, conf, user = debian_spool
    record, original = kill_root_delivery(top, conf, user)
    os.chown(record, 0, 0)                                       # as an older version left it: root's, 0600
    out = imapd_as(user, conf, b"a SELECT INBOX\r\nb LOGOUT\r\n")
    assert b"a NO [UNAVAILABLE]" in out, out
    pop = user.run([stage().program("pop3d"), "-C", str(conf)], input=b"USER %s\r\nPASS %s\r\nQUIT\r\n"
                   % (user.name.encode(), user.name.encode()))
    assert b"-ERR [SYS/TEMP]" in pop.stdout, pop.stdout
    assert record.exists()
    _recover_as_root(conf, user)                                 # root's next delivery finishes it
    assert (top / "spool" / user.name).read_bytes() == original and record.read_bytes()[:1] == b"\n"


@pytest.mark.root
@pytest.mark.parametrize("kind", ["append", "journal"])
def test_a_record_planted_by_another_user_is_ignored(real_users, kind):
    """On a 1777 spool anyone may create .victim.append: it is logged and ignored, never applied."""
    victim, attacker = real_users.add("vic"), real_users.add("att")
    top, conf = system_installation("imap", {victim.name: victim.uid, attacker.name: attacker.uid})
    try:
        spool_dir = top / "spool"
        spool_dir.chmod(0o1777)
        spool = spool_dir / victim.name
        done = subprocess.run([stage().program("mail.local"), "-C", str(conf), victim.name],
                              input=b"Subject: second\n\nx\n", capture_output=True)
        assert done.returncode == 0, done.stderr
        before = spool.read_bytes()
        st = spool.stat()
        if kind == "append":
            forged = (b"MAILSUITE-APPEND-2 %d %d 0 %d 0 0 0 0 0a 64\n" % (st.st_dev, st.st_ino, st.st_size)
                      + before[:64])                            # applied, it would cut the whole mailbox
            forged_old = b"APPEND %d %d 0 999999999999\n" % (st.st_dev, st.st_ino)
        else:
            content = b"From evil@example.org Mon Jan  1 00:00:00 2024\nSubject: planted\n\nx\n\n"
            forged = content + (b"MAILSUITE-JOURNAL-2 %d %d 0 %d %d" % (st.st_dev, st.st_ino, len(content),
                                                                      st.st_size)).ljust(127) + b"\n"
            forged_old = content + (b"MAILSUITE-JOURNAL-1 %d %d 0 %d" % (st.st_dev, st.st_ino, len(content))
                                    ).ljust(127) + b"\n"
        for data in (forged_old, forged):
            (spool_dir / f".{victim.name}.{kind}").unlink(missing_ok=True)    # as before any delivery made it
            written = attacker.run(["sh", "-c", f"cat > {spool_dir}/.{victim.name}.{kind}"], input=data)
            assert written.returncode == 0, written.stderr
            done = subprocess.run([stage().program("mail.local"), "-C", str(conf), victim.name],
                                  input=b"Subject: third\n\nx\n", capture_output=True)
            assert done.returncode == 0, done.stderr
            assert b"ignored" in done.stderr
            now = spool.read_bytes()
            assert now.startswith(before) and b"Subject: third" in now and b"planted" not in now
            before = now
    finally:
        shutil.rmtree(top, ignore_errors=True)
