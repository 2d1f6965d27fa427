"""Helpers for the imapd tests: sessions over stdin/stdout, Dovecot beside us.

Every session is a child process speaking IMAP on its stdin/stdout
(`imapd --preauth USER`, or plain inetd mode for LOGIN tests), so no test
needs a port.  Dovecot refuses to serve mail as root, so when the tests run
as root the sandbox for a Dovecot comparison is owned by `nobody` and both
servers run as that user.
"""

import imaplib
import os
import pwd
import select
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stage import stage

REPO = Path(__file__).resolve().parent.parent
DOVECOT_IMAP = "/usr/lib/dovecot/imap"
RUN_AS = "nobody" if os.geteuid() == 0 else None      # who runs both servers on a shared_sandbox


def program(name, as_user=None):
    """An installed program; the stage's copy (see stage.py) when it runs as another user."""
    if as_user is None:
        return str(Path(sys.executable).parent / name)
    return stage().program(name)


def deliver(sandbox, user, message, *, as_user=None):
    """Deliver bytes with mail.local, as the real MTA would."""
    result = subprocess.run(
        _as(as_user) + [program("mail.local", as_user), "-C", sandbox.conf, user],
        input=message, capture_output=True, env=sandbox.env, timeout=60,
    )
    assert result.returncode == 0, result.stderr


def _as(user):
    if user is None:
        return []
    entry = pwd.getpwnam(user)
    return ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups", "--"]


def imapd_command(sandbox, user="alice", *, as_user=None, preauth=True):
    args = _as(as_user) + [program("imapd", as_user), "-C", sandbox.conf]
    if preauth:
        args += ["--preauth", user]
    return args


class RawClient:
    """A raw IMAP client on a child's pipes, reading with a deadline."""

    def __init__(self, sandbox):
        self.proc = subprocess.Popen(imapd_command(sandbox), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=sandbox.env, bufsize=0)
        self.buffer = b""

    def send(self, line):
        self.proc.stdin.write(line + b"\r\n")

    def wait_for(self, needle, timeout=20, missing_ok=False):
        """Read until `needle` appears; the lines read so far are returned (None if MISSING_OK and it never did)."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while needle not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 and missing_ok:
                return None
            assert left > 0, f"no {needle!r} in {self.buffer!r}"
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                assert chunk, f"imapd closed the connection: {self.buffer!r}"
                self.buffer += chunk
        text, _, self.buffer = self.buffer.partition(needle)
        return text + needle

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


class StreamIMAP(imaplib.IMAP4_stream):
    """imaplib over a child's stdin/stdout, with the environment we choose."""

    def __init__(self, args, env):
        self._args, self._env = args, env
        super().__init__(shlex.join(args))

    def open(self, host=None, port=None, timeout=None):
        self.host = None
        self.port = None
        self.sock = None
        self.file = None
        self.process = subprocess.Popen(
            self._args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=self._env,
            stderr=subprocess.DEVNULL,
        )
        self.writefile = self.process.stdin
        self.readfile = self.process.stdout

    def shutdown(self):
        super().shutdown()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def imapd(sandbox, user="alice", **kw):
    return StreamIMAP(imapd_command(sandbox, user, **kw), sandbox.env)


def raw_session(sandbox, script, user="alice", preauth=True, as_user=None, timeout=60):
    """Feed bytes to one imapd on stdin; returns (stdout bytes, returncode)."""
    result = subprocess.run(
        imapd_command(sandbox, user, preauth=preauth, as_user=as_user), input=script,
        capture_output=True, env=sandbox.env, timeout=timeout,
    )
    return result.stdout, result.returncode


class Dovecot:
    """Dovecot's imap binary in preauth mode on the same spool and ~/mail.

    Its index is kept in memory, so everything it reports comes from the
    mbox files.  `concurrent` configures it for several sessions on one
    mbox, as the multi-session tests need: the index on disk, where its
    sessions learn of each other's changes, and mbox files synced fully and
    written at once.  With the defaults (mbox_dirty_syncs, which trusts a
    file whose size and mtime did not change, and mbox_lazy_writes, which
    writes flags only at CHECK or close) its processes lose each other's
    flag changes at once; even so, past three or four sessions writing one
    mbox they still do now and then (see imap_stress.py).
    """

    def __init__(self, sandbox, user="alice", run_as=None, concurrent=False):
        self.sandbox = sandbox
        self.user = user
        self.dir = Path(tempfile.mkdtemp(prefix="dovecot-", dir=sandbox.dir))
        uid = pwd.getpwnam(run_as).pw_uid if run_as else os.getuid()
        gid = pwd.getpwnam(run_as).pw_gid if run_as else os.getgid()
        home = sandbox.home(user)
        index = self.dir / "index" if concurrent else "MEMORY"
        self.conf = self.dir / "dovecot.conf"
        self.conf.write_text(
            f"mail_location = mbox:{home}/mail:INBOX={sandbox.spool(user)}:INDEX={index}\n"
            "mbox_write_locks = fcntl dotlock\n"
            + ("mbox_dirty_syncs = no\nmbox_lazy_writes = no\n" if concurrent else "") +
            "mbox_read_locks = fcntl\n"
            "ssl = no\n"
            "log_path = /dev/null\n"
            f"base_dir = {self.dir}/run\n"
            f"state_dir = {self.dir}/state\n"
            f"mail_uid = {uid}\nmail_gid = {gid}\n"
            "first_valid_uid = 0\nfirst_valid_gid = 0\n"
        )
        if run_as:
            os.chown(self.dir, uid, gid)
            os.chown(self.conf, uid, gid)
        self.env = dict(os.environ, USER=user, HOME=str(home))

    def session(self):
        return StreamIMAP([DOVECOT_IMAP, "-c", str(self.conf)], self.env)


def shared_sandbox():
    """A sandbox both servers may use (owned by nobody when we are root): a fixture body."""
    from conftest import Sandbox
    directory = tempfile.mkdtemp(prefix="imapd-dovecot-")
    os.chmod(directory, 0o755)
    box = Sandbox(os.path.join(directory, "sb"))
    box.clear_spools()
    if RUN_AS:
        chown_tree(directory, RUN_AS)
    yield box
    shutil.rmtree(directory, ignore_errors=True)


def ours(box):
    """An imaplib session with our imapd on a shared sandbox."""
    return imapd(box, as_user=RUN_AS)


def theirs(box):
    """An imaplib session with Dovecot's imap on the same sandbox."""
    return Dovecot(box, run_as=RUN_AS).session()


def chown_tree(path, user):
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in files:
            os.lchown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


def set_imap_option(sandbox, key, value):
    """Set one [imap] key in the sandbox's config file."""
    path = Path(sandbox.conf)
    text = path.read_text()
    if "\n[imap]\n" in "\n" + text:
        text = text.replace("[imap]\n", f"[imap]\n{key} = {value}\n", 1)
    else:
        text += f"\n[imap]\n{key} = {value}\n"
    path.write_text(text)


def mbsync(sandbox, rc):
    result = subprocess.run(["mbsync", "-c", str(rc), "-a"], capture_output=True, env=sandbox.env, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    return result


def mbsync_config(sandbox, tmp_path):
    local = tmp_path / "Maildir"
    local.mkdir()
    rc = tmp_path / "mbsyncrc"
    rc.write_text(
        "IMAPStore remote\n"
        f"Tunnel \"{shlex.join(imapd_command(sandbox))}\"\n\n"
        "MaildirStore local\n"
        f"Path {local}/\nInbox {local}/INBOX\nSubFolders Verbatim\n\n"
        "Channel test\nFar :remote:\nNear :local:\nPatterns *\nCreate Both\nExpunge Both\n"
        f"SyncState *\n"
    )
    return rc, local


def maildir_files(folder):
    """{unique name: maildir flags} of a Maildir folder."""
    out = {}
    for sub in ("new", "cur"):
        for entry in (folder / sub).iterdir() if (folder / sub).exists() else ():
            name, _, flags = entry.name.partition(":2,")
            out[name] = flags
    return out
