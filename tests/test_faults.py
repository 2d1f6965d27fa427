"""Kill the store at every change it makes to a file; the next process must find a whole mailbox.

A child process runs the real code with every write the store makes
(`fileio.pwrite_all`, and the truncations, renames and unlinks of the
mailbox, its crash records and its dotlock) wrapped to SIGKILL itself at
the k-th one (k = 1, 2, ...; half of a write reaches the file first),
until a run gets through unharmed.  After each kill, optionally, another
program appends a message as it would after the crash (procmail, or
dovecot-lda); then the next process to take the lock must see the mailbox
either before the operation or after it, never a mixture, with the other
program's message whole and last, the UIDs of the messages it kept
unchanged, and no crash record left behind.
"""

import os
import pwd
import re
import shutil
import subprocess
import tempfile

import peers
import pytest
from conftest import REPO, Sandbox, subjects
from dying import run_dying
from imap_support import Dovecot, chown_tree

from mailsuite.lda.deliver import deliver, open_spool
from mailsuite.store.prepare import prepare_bytes

DELIVER = """
body = b"".join(b"line %d of a long message\\n" % i for i in range(300))
prepared = prepare_bytes(b"Subject: new\\n\\n" + body)
deliver(cfg, user, prepared, sender="s@example.org")
"""

DELIVER_ALL = """
from mailsuite.lda.deliver import Delivery, deliver_all
bodies = [b"".join(b"line %d of new message %d\\n" % (i, n) for i in range(200)) for n in (1, 2, 3)]
jobs = [Delivery(prepare_bytes(b"Subject: new%d\\n\\n" % n + body), sender="s@example.org")
        for n, body in zip((1, 2, 3), bodies)]
assert deliver_all(cfg, user, jobs) == [None, None, None]
"""

IMAP_APPEND = """
body = b"".join(b"From line %d, not quoted\\n" % i for i in range(150))
with open_spool(cfg, user) as box, box.locked():
    box.append(b"Subject: new\\r\\n\\r\\n" + body.replace(b"\\n", b"\\r\\n"), sender="s@example.org", assign_uid=True)
"""

FILE_TARGET = """
import io
from mailsuite.mta import agents
from mailsuite.mta import routing
body = b"".join(b"line %d of a message for a file\\n" % i for i in range(300))
result = agents.deliver_target(cfg, routing.Target("file", user.spool), io.BytesIO(b"Subject: new\\n\\n" + body),
                               sender="s@example.org", recipient="alice@localhost", queue_id="Q")
if result.status != "sent":             # the child writing the file was killed: so are we
    os.kill(os.getpid(), signal.SIGKILL)
"""

EXPUNGE = """
u = uids()
with open_spool(cfg, user) as box, box.locked():
    box.sync(expunge={u[1], u[4]}, flags={u[2]: (frozenset("RF"), tuple("kw%d" % i for i in range(40)))})
"""

EMPTY = """
u = uids()
with open_spool(cfg, user) as box, box.locked():
    box.sync(expunge=set(u))
"""

RECOVER = """
with open_spool(cfg, user) as box, box.locked():
    box.scan()
"""

SIX = [f"m{i}" for i in range(1, 7)]
CASES = {
    "deliver": (DELIVER, ["m1", "m2", "m3"], ["m1", "m2", "m3", "new"]),
    "deliver-all": (DELIVER_ALL, ["m1", "m2", "m3"], ["m1", "m2", "m3", "new1", "new2", "new3"]),
    "imap-append": (IMAP_APPEND, ["m1", "m2", "m3"], ["m1", "m2", "m3", "new"]),
    "file-target": (FILE_TARGET, ["m1", "m2", "m3"], ["m1", "m2", "m3", "new"]),
    "expunge": (EXPUNGE, SIX, ["m1", "m3", "m4", "m6"]),
    "empty": (EMPTY, ["m1", "m2"], []),
}
FOREIGN_BODY = b"".join(b"foreign line %d\n" % i for i in range(40)) + b"\nFrom x Thu Nov 29 22:33:52 2001\nend\n"


class Harness:
    """A sandbox, the child that dies, and the checks after each death."""

    def __init__(self, directory, *, as_user=None, lib=None):
        self.sandbox = Sandbox(os.path.join(directory, "sb"))
        self.as_user = as_user
        self.lib = lib or str(REPO / "lib")
        self.directory = directory

    def fill(self, subjects_):
        """The spool with these messages, UIDs from 1, and nothing remembered of earlier runs (so every
        run makes the same changes, and the k-th is the same one each time)."""
        sb = self.sandbox
        sb.clear_spools()
        shutil.rmtree(sb.home("alice") / ".cache", ignore_errors=True)
        for subject in subjects_:
            prepared = prepare_bytes(b"Subject: %s\n\n" % subject.encode() + b"text of %s\n" % subject.encode() * 40)
            deliver(sb.cfg, sb.user("alice"), prepared, sender="s@example.org")
            prepared.close()
        with open_spool(sb.cfg, sb.user("alice")) as box, box.locked():
            index = box.sync()
        if self.as_user:
            chown_tree(self.directory, self.as_user)
        return {subject_of(box_read(sb, m)): m.uid for m in index.messages}

    def run(self, action, kill_at):
        return run_dying(self.lib, self.sandbox.conf, action, kill_at, as_user=self.as_user, cwd=self.directory)

    def recover(self):
        """The mailbox as the next process sees it once it has the lock: (subjects, uids by subject)."""
        sb = self.sandbox
        with open_spool(sb.cfg, sb.user("alice")) as box, box.locked():
            index = box.scan()
            found = [(subject_of(box.read(m)), m) for m in index.messages]
        return [s for s, _ in found], {s: m.uid for s, m in found}, {s: m for s, m in found}

    def leftovers(self):
        """Crash records not finished (the append record stays for the next append, marked done by an
        empty first line; a dead process's dotlock and its temporary file are stale, and harmless)."""
        places = [self.sandbox.dir / "spool", self.sandbox.home("alice") / ".mailsuite"]
        return [p.name for place in places if place.exists() for p in place.iterdir()
                if re.search(r"\.(append|journal)", p.name) and p.read_bytes()[:1] not in (b"", b"\n")]


def subject_of(raw):
    found = re.search(rb"^Subject: (.*)$", raw, re.M)
    return found.group(1).decode() if found else None


def box_read(sb, m):
    with open_spool(sb.cfg, sb.user("alice")) as box:
        return box.read(m)


def procmail_appends(harness, tmp_path):
    """procmail delivers, as it would once our dead process's dotlock has gone stale."""
    procmail = peers.require("procmail")
    spool = harness.sandbox.spool("alice")
    _remove_stale_dotlock(spool)
    os.utime(spool, (0, os.stat(spool).st_mtime))      # read long ago: procmail need not wait to mark new mail
    rc = tmp_path / "procmailrc"
    rc.write_text(f":0:\n{spool}\n")
    message = b"From f@example.org Mon Jan  1 00:00:00 2024\nSubject: foreign\n\n" + FOREIGN_BODY
    done = subprocess.run([procmail, "-m", str(rc)], input=message, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return FOREIGN_BODY.replace(b"\nFrom x", b"\n>From x")


def dovecot_appends(harness, tmp_path):
    """dovecot-lda delivers (with Content-Length, and the body's From_ line left as it is)."""
    lda = peers.require("dovecot-lda")
    sb = harness.sandbox
    _remove_stale_dotlock(sb.spool("alice"))
    dovecot = Dovecot(sb, run_as=harness.as_user)
    entry = pwd.getpwnam(harness.as_user)
    done = subprocess.run(["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups", "--",
                           lda, "-c", str(dovecot.conf), "-f", "f@example.org"],
                          input=b"Subject: foreign\n\n" + FOREIGN_BODY, env=dovecot.env, capture_output=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    shutil.rmtree(dovecot.dir)
    return FOREIGN_BODY


def _remove_stale_dotlock(spool):
    try:
        os.unlink(str(spool) + ".lock")
    except FileNotFoundError:
        pass


def kill_everywhere(harness, case, foreign=None, tmp_path=None):
    """Kill the operation at each of its changes in turn; check what the next process finds each time."""
    action, before, after = CASES[case]
    outcomes = set()
    for kill_at in range(1, 400):
        uids = harness.fill(before)
        original = harness.sandbox.spool("alice").read_bytes()
        killed = harness.run(action, kill_at)
        foreign_body = foreign(harness, tmp_path) if foreign else None
        got, now, messages = harness.recover()
        tail = ["foreign"] if foreign else []
        assert got in (before + tail, after + tail), (kill_at, got)
        assert all(now[s] == uids[s] for s in got if s in uids), (kill_at, "UIDs changed", uids, now)
        if foreign:
            with open_spool(harness.sandbox.cfg, harness.sandbox.user("alice")) as box:
                msg = messages["foreign"]
                assert box.read(msg, msg.body, msg.end) == foreign_body, kill_at
        elif got == before and case in ("deliver", "deliver-all", "file-target"):
            assert harness.sandbox.spool("alice").read_bytes() == original, kill_at
        assert harness.leftovers() == [], (kill_at, harness.leftovers())
        outcomes.add(tuple(got))
        if not killed:
            break
    else:
        pytest.fail("the operation never completed")
    assert kill_at > 3                     # it really was killed at several points
    assert tuple(after + (["foreign"] if foreign else [])) in outcomes
    return kill_at


@pytest.fixture
def harness(tmp_path):
    return Harness(str(tmp_path))


@pytest.mark.parametrize("case", sorted(CASES))
def test_sigkill_at_every_change(harness, case):
    kill_everywhere(harness, case)


@pytest.mark.parametrize("case", ["deliver", "deliver-all", "imap-append", "expunge"])
def test_procmail_appends_between_the_crash_and_the_recovery(harness, tmp_path, case):
    kill_everywhere(harness, case, procmail_appends, tmp_path)


@pytest.fixture
def nobody_harness(world_readable_dir):
    """A harness whose files and processes are nobody's (Dovecot will not deliver as root)."""
    if os.geteuid() != 0:
        return Harness(tempfile.mkdtemp(dir=world_readable_dir), lib=os.path.join(world_readable_dir, "lib"))
    directory = tempfile.mkdtemp(dir=world_readable_dir)
    os.chmod(directory, 0o755)
    return Harness(directory, as_user="nobody", lib=os.path.join(world_readable_dir, "lib"))


@pytest.mark.root
@pytest.mark.parametrize("case", ["deliver", "expunge"])
def test_dovecot_lda_appends_between_the_crash_and_the_recovery(nobody_harness, tmp_path, case):
    kill_everywhere(nobody_harness, case, dovecot_appends, tmp_path)


def test_killed_recovery_is_finished_by_the_next(harness):
    """The recovery is itself killed at each of its changes, after each point the expunge can die at."""
    action, before, after = CASES["expunge"]
    for first in range(1, 400):
        harness.fill(before)
        if not harness.run(action, first):
            break
        for second in range(1, 400):
            if not harness.run(RECOVER, second):
                break
        got, _, _ = harness.recover()
        assert got in (before, after), (first, second, got)
        assert harness.leftovers() == [], (first, second)
    assert first > 3


def test_killed_recovery_still_keeps_what_procmail_appended(harness, tmp_path):
    """The expunge dies with its journal sealed, procmail appends, and the recovery (which must move
    procmail's message into a new journal and rename it into place) dies at each of its changes in turn."""
    action, before, after = CASES["expunge"]
    sealed = 0
    for first in range(1, 400):
        harness.fill(before)
        if not harness.run(action, first):
            break
        if not _sealed_journal(harness):
            harness.recover()
            continue
        sealed += 1
        foreign_body = procmail_appends(harness, tmp_path)
        snapshot = _records_and_spool(harness)
        for second in range(1, 400):
            _restore(snapshot)
            killed = harness.run(RECOVER, second)
            got, _, messages = harness.recover()
            assert got in (before + ["foreign"], after + ["foreign"]), (first, second, got)
            with open_spool(harness.sandbox.cfg, harness.sandbox.user("alice")) as box:
                msg = messages["foreign"]
                assert box.read(msg, msg.body, msg.end) == foreign_body, (first, second)
            assert harness.leftovers() == [], (first, second)
            if not killed:
                break
        assert second > 3
    assert sealed


def _sealed_journal(harness):
    journal = harness.sandbox.dir / "spool" / ".alice.journal"
    return journal.exists() and journal.read_bytes()[-128:].startswith(b"MAILSUITE-JOURNAL-2")


def _records_and_spool(harness):
    spool_dir = harness.sandbox.dir / "spool"
    return {p: p.read_bytes() for p in spool_dir.iterdir() if p.name == "alice" or p.name.startswith(".alice.")}


def _restore(snapshot):
    """Put every file back as it was, the mailbox in place (its inode is named in the journal)."""
    directory = next(iter(snapshot)).parent
    for path in directory.iterdir():
        if path.name.startswith(".alice.") and path not in snapshot:
            path.unlink()
    for path, data in snapshot.items():
        with open(path, "r+b" if path.exists() else "wb") as f:
            f.write(data)
            f.truncate()


@pytest.mark.root
def test_full_filesystem_is_a_temporary_failure(sandbox, tmp_path):
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)]).returncode:
        peers.unavailable("mounting a tmpfs", "mount -t tmpfs failed")
    try:
        conf = sandbox.dir / "mailsuite.conf"
        conf.write_text(conf.read_text().replace(f"spool_dir = {sandbox.dir}/spool", f"spool_dir = {mount_point}"))
        assert sandbox.run("mail.local", "alice", input=b"Subject: small\n\nfits\n").returncode == 0
        before = (mount_point / "alice").read_bytes()
        big = b"Subject: big\n\n" + b"y" * 200_000 + b"\n"
        done = sandbox.run("mail.local", "alice", input=big)
        assert done.returncode == os.EX_TEMPFAIL, done.stderr
        assert (mount_point / "alice").read_bytes() == before
        assert subjects(mount_point / "alice") == ["small"]
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode:
            subprocess.run(["umount", "--lazy", str(mount_point)])    # a process of a failed test still in it
