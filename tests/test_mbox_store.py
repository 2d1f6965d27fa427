"""The store: UIDs, flags, expunge, in-place writes, the index cache, foreign files."""

import mailbox
import os

import pytest
from conftest import subjects

from mailsuite.lda.deliver import deliver, open_spool
from mailsuite.store import mailbox as mboxmod
from mailsuite.store.mailbox import Mailbox, MailboxError
from mailsuite.store.prepare import prepare_bytes


def put(sandbox, user, *subjects, body=b"body\n"):
    for subject in subjects:
        prepared = prepare_bytes(b"Subject: " + subject.encode() + b"\n\n" + body)
        deliver(sandbox.cfg, sandbox.user(user), prepared, sender="s@example.org")
        prepared.close()




def test_readers_assign_ascending_uids_dovecot_style(sandbox):
    put(sandbox, "alice", "a", "b", "c")
    with open_spool(sandbox.cfg, sandbox.user("alice")) as box:
        assert [m.uid for m in box.scan().messages] == [0, 0, 0]
        with box.locked():
            index = box.sync()
    assert [m.uid for m in index.messages] == [1, 2, 3]
    assert index.uidvalidity > 0 and index.uidlast == 3
    text = sandbox.spool("alice").read_bytes()
    assert text.count(b"X-IMAPbase: %d 0000000003\n" % index.uidvalidity) == 1
    assert [int(m["x-uid"]) for m in mailbox.mbox(str(sandbox.spool("alice")))] == [1, 2, 3]
    put(sandbox, "alice", "d")
    with open_spool(sandbox.cfg, sandbox.user("alice")) as box, box.locked():
        index = box.sync()
    assert [m.uid for m in index.messages] == [1, 2, 3, 4]


def test_flag_changes_and_new_uids_are_written_in_place(sandbox):
    put(sandbox, "alice", "a", "b")
    path = sandbox.spool("alice")
    before = os.stat(path)
    with open_spool(sandbox.cfg, sandbox.user("alice")) as box, box.locked():
        box.sync()
        index = box.sync(flags={2: (frozenset("ROAF"), ("$Label1", "work"))})
    after = os.stat(path)
    assert (after.st_ino, after.st_size) == (before.st_ino, before.st_size)
    assert [(sorted(m.flags), m.keywords) for m in index.messages] == [([], ()), (["A", "F", "O", "R"], ("$Label1", "work"))]
    assert index.keywords == ("$Label1", "work")
    msg = list(mailbox.mbox(str(path)))[1]
    assert (msg["status"], msg["x-status"], msg["x-keywords"].strip()) == ("RO", "AF", "$Label1 work")


def test_expunge_keeps_the_others_and_moves_imapbase(sandbox):
    put(sandbox, "alice", "a", "b", "c", "d")
    with open_spool(sandbox.cfg, sandbox.user("alice")) as box, box.locked():
        first = box.sync()
        index = box.sync(expunge={1, 3})
    assert [m.uid for m in index.messages] == [2, 4]
    assert (index.uidvalidity, index.uidlast) == (first.uidvalidity, 4)
    assert subjects(sandbox.spool("alice")) == ["b", "d"]
    assert sandbox.spool("alice").read_bytes().count(b"X-IMAPbase:") == 1
    with open_spool(sandbox.cfg, sandbox.user("alice")) as box, box.locked():
        index = box.sync(expunge={2, 4})
    assert index.messages == [] and (index.uidvalidity, index.uidlast) == (first.uidvalidity, 4)
    text = sandbox.spool("alice").read_bytes()      # emptied: the UID state stays in a pseudo-message
    assert b"Subject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\n" in text
    assert b"\nX-IMAP: %d 0000000004 " % first.uidvalidity in text and text.startswith(b"From MAILER-DAEMON ")


def test_growing_flags_rewrite_the_tail_through_a_journal(sandbox):
    put(sandbox, "alice", "a", "b", "c")
    many = tuple(f"keyword{i}" for i in range(30))
    with open_spool(sandbox.cfg, sandbox.user("alice")) as box, box.locked():
        box.sync()
        index = box.sync(flags={2: (frozenset("R"), many)})
    assert index.messages[1].keywords == many
    assert [m.uid for m in index.messages] == [1, 2, 3]
    assert subjects(sandbox.spool("alice")) == ["a", "b", "c"]
    assert [p.name for p in sandbox.spool("alice").parent.glob(".alice.*") if p.read_bytes()[:1] not in (b"", b"\n")] == []


def test_mail_appended_during_a_session_is_kept(sandbox):
    put(sandbox, "alice", "a", "b")
    with open_spool(sandbox.cfg, sandbox.user("alice")) as box:
        with box.locked():
            seen = box.sync()
        put(sandbox, "alice", "late")                 # another process delivers meanwhile
        with box.locked():
            index = box.sync(expunge={seen.messages[0].uid})
    assert subjects(sandbox.spool("alice")) == ["b", "late"]
    assert [m.uid for m in index.messages] == [2, 3]


def test_append_with_uid_for_imap(sandbox):
    with open_spool(sandbox.cfg, sandbox.user("alice")) as box, box.locked():
        assert box.append(b"Subject: one\r\n\r\nx", sender="a@b", assign_uid=True) == 1
        assert box.append(b"Subject: two\n\ny", sender="a@b", flags=frozenset("RF"), assign_uid=True) == 2
        index = box.scan()
    assert [(m.uid, sorted(m.flags)) for m in index.messages] == [(1, []), (2, ["F", "R"])]
    assert index.uidlast == 2


def test_cache_rescans_only_the_appended_tail(sandbox, monkeypatch):
    put(sandbox, "alice", *"abcdef")
    calls = []
    real = mboxmod.scan_range
    monkeypatch.setattr(mboxmod, "scan_range", lambda fd, start, size: calls.append(start) or real(fd, start, size))
    with open_spool(sandbox.cfg, sandbox.user("alice")) as box:
        first = box.scan()
        assert calls == [0]
        assert box.scan().messages[-1].start == first.messages[-1].start and calls == [0]
        put(sandbox, "alice", "g")
        index = box.scan()
    assert calls == [0, first.messages[-1].start, 0]           # the new tail, and the first message again
    assert len(index.messages) == 7
    assert [(m.start, m.end) for m in index.messages[:6]] == [(m.start, m.end) for m in first.messages]


def test_foreign_mbox_without_our_headers(sandbox):
    path = sandbox.spool("alice")
    path.write_bytes(b"From a@b Mon Jan  1 00:00:00 2024\nSubject: one\nStatus: RO\n\nhello\n\n"
                     b"From c@d Mon Jan  1 00:00:01 2024\nSubject: two\nContent-Length: 6\n\nworld\n")
    with open_spool(sandbox.cfg, sandbox.user("alice")) as box:
        index = box.scan()
        assert [sorted(m.flags) for m in index.messages] == [["O", "R"], []]
        # the file's last newline is the separator's, as Dovecot reads it (and so the length is not trusted)
        assert box.read(index.messages[1]) == b"Subject: two\nContent-Length: 6\n\nworld"
        assert index.messages[0].date.year == 2024
        with box.locked():
            index = box.sync()
    assert [m.uid for m in index.messages] == [1, 2]
    assert subjects(path) == ["one", "two"]
    assert b"Content-Length: 6\n" in path.read_bytes()


def test_uw_pseudo_message_is_kept_and_hidden(sandbox):
    path = sandbox.spool("alice")
    path.write_bytes(b"From MAILER-DAEMON Mon Jan  1 00:00:00 2024\nSubject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\n"
                     b"X-IMAP: 1700000000 0000000005\n\npseudo\n\n"
                     b"From a@b Mon Jan  1 00:00:00 2024\nSubject: real\nX-UID: 5\n\nhi\n")
    with open_spool(sandbox.cfg, sandbox.user("alice")) as box:
        index = box.scan()
        assert [m.uid for m in index.messages] == [5]
        assert (index.uidvalidity, index.uidlast) == (1700000000, 5)
        put(sandbox, "alice", "new")
        with box.locked():
            index = box.sync()
    assert [m.uid for m in index.messages] == [5, 6]
    assert b"X-IMAP: 1700000000 0000000006" in path.read_bytes()


def test_uids_that_do_not_ascend_are_reassigned(sandbox):
    path = sandbox.spool("alice")
    path.write_bytes(b"From a Mon Jan  1 00:00:00 2024\nX-IMAPbase: 17 0000000009\nX-UID: 4\n\n1\n\n"
                     b"From a Mon Jan  1 00:00:00 2024\nX-UID: 3\n\n2\n\n"
                     b"From a Mon Jan  1 00:00:00 2024\nX-UID: 99\n\n3\n")
    with open_spool(sandbox.cfg, sandbox.user("alice")) as box, box.locked():
        index = box.sync()
    assert [m.uid for m in index.messages] == [4, 10, 11]


@pytest.mark.parametrize("make", ["symlink", "hardlink", "fifo", "not_mbox"])
def test_hostile_files_are_refused(sandbox, tmp_path, make):
    path = sandbox.spool("alice")
    path.unlink()
    victim = tmp_path / "victim"
    victim.write_bytes(b"secret\n")
    if make == "symlink":
        path.symlink_to(victim)
    elif make == "hardlink":
        os.link(victim, path)
    elif make == "fifo":
        os.mkfifo(path)
    else:
        path.write_bytes(b"this is not a mailbox\n")
    with pytest.raises(MailboxError):
        box = Mailbox(str(path), sandbox.cfg, owner=sandbox.user("alice"))
        box.scan()
    assert victim.read_bytes() == b"secret\n"


def test_writing_needs_the_lock(sandbox):
    put(sandbox, "alice", "a")
    with open_spool(sandbox.cfg, sandbox.user("alice")) as box:
        with pytest.raises(RuntimeError):
            box.sync()


def test_missing_mailbox_is_empty(sandbox):
    sandbox.spool("bob").unlink()
    box = Mailbox(str(sandbox.spool("bob")), sandbox.cfg, owner=sandbox.user("bob"))
    assert not box.exists and box.scan().messages == []
    with box.locked():
        pass


@pytest.mark.root
def test_a_file_we_may_only_read_opens_read_only(sandbox, world_readable_dir):
    """`mail -u` on a spool the user may read but not write: readable, never writable."""
    import pwd
    import shutil
    import subprocess
    put(sandbox, "alice", "a", "b")
    path = os.path.join(world_readable_dir, "alice")
    shutil.copyfile(sandbox.spool("alice"), path)
    os.chmod(path, 0o644)
    conf = os.path.join(world_readable_dir, "mailsuite.conf")
    with open(conf, "w") as f:
        f.write("[mailsuite]\nindex_dir =\n")
    script = f"""
from mailsuite.core import config
from mailsuite.store.mailbox import Mailbox, MailboxError
box = Mailbox({path!r}, config.load({conf!r}))
print(box.readonly, len(box.scan().messages))
try:
    with box.locked():
        pass
except MailboxError as exc:
    print("refused")
"""
    nobody = pwd.getpwnam("nobody")
    done = subprocess.run(["/usr/bin/python3", "-c", script], capture_output=True, text=True, cwd=world_readable_dir,
                          env={"PYTHONPATH": os.path.join(world_readable_dir, "lib")},
                          user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[])
    assert done.stdout.split() == ["True", "2", "refused"], done.stderr


def test_a_tail_scan_sees_uidlast_raised_in_place_by_another_process(sandbox):
    """A caches the index; B (with no cache of its own) raises UIDLAST in place and appends; A agrees."""
    put(sandbox, "alice", "a", "b")
    with open_spool(sandbox.cfg, sandbox.user("alice")) as a:
        with a.locked():
            a.sync()
        stale = a.scan()
        with open_spool(sandbox.cfg, sandbox.user("alice")) as b:
            b.cache = None
            with b.locked():
                uid = b.append(b"Subject: appended\n\nx\n", sender="x@y", assign_uid=True)
        index = a.scan()
    assert uid == 3 and stale.uidlast == 2
    assert [m.uid for m in index.messages] == [1, 2, 3] and index.uidlast == 3


def test_the_cache_keeps_the_newest_state(sandbox):
    put(sandbox, "alice", "a")
    with open_spool(sandbox.cfg, sandbox.user("alice")) as box:
        with box.locked():
            box.sync()
        stored = box.cache.load(box.path)
        key = stored.key
        stored.key = (key[0], key[1], key[2], key[3], key[4] - 1)
        box.cache.store(box.path, stored)
        assert box.cache.load(box.path).key == key


def fresh_scan(sandbox, user):
    """The file's index as a newcomer with no cache would see it."""
    box = Mailbox(str(sandbox.spool(user)), sandbox.cfg)
    try:
        return [m.as_tuple() for m in box.scan().messages]
    finally:
        box.close()


@pytest.mark.parametrize("changes, expunge", [
    ({1: "RO", 3: "RF"}, ()),                                   # fits in the padding: in place
    ({2: "RAFTD"}, {4}),                                         # in place, then a journalled tail
    ({1: "R"}, {1}),                                             # the first message goes: X-IMAPbase moves
])
def test_the_index_after_a_rewrite_is_what_a_fresh_scan_finds(sandbox, changes, expunge):
    put(sandbox, "alice", "a", "b", "c", "d", "e")
    with open_spool(sandbox.cfg, sandbox.user("alice")) as box, box.locked():
        box.sync()
        index = box.sync(flags={uid: (frozenset(f), ("work",)) for uid, f in changes.items()}, expunge=expunge)
        assert [m.as_tuple() for m in index.messages] == fresh_scan(sandbox, "alice")
        assert [m.as_tuple() for m in box.scan().messages] == fresh_scan(sandbox, "alice")


def test_the_memory_of_a_big_scan_or_rewrite_goes_back_to_the_system(sandbox, monkeypatch):
    """A session that opened or rewrote a big mailbox once must not keep that burst's pages (issue 12, item 10)."""
    from mailsuite.core import memory
    released = []
    monkeypatch.setattr(memory, "release_freed", lambda: released.append(True))
    monkeypatch.setattr(mboxmod, "_RELEASE_AFTER", 20)
    put(sandbox, "alice", *"abc")
    with open_spool(sandbox.cfg, sandbox.user("alice")) as box:
        box.scan()
    assert not released                                       # small work: nothing to give back
    put(sandbox, "alice", *(f"m{n}" for n in range(30)))
    box = Mailbox(str(sandbox.spool("alice")), sandbox.cfg, owner=sandbox.user("alice"))
    with box.locked():
        box.forget()
        box.scan()
        assert len(released) == 1                             # the whole file parsed
        box.sync()
    assert len(released) == 2                                 # and every message given its UID
