"""The local delivery agents: a user's mailbox, a file, a command.

The mailbox goes through `deliver.deliver_all` (the same code as
mail.local): a worker gathers every message of its batch for one mailbox
(`MailboxDeliveries`) and appends them at once, under one lock with one
fsync.  It waits at most `[queue] mailbox_lock_wait` for a mailbox someone
holds locked: those recipients are deferred, and the worker moves on to
mail for others, rather than every worker waiting on one user's lock.
Files and commands come only from aliases and .forward files (see
routing.py); each runs in a child process with the identity the router
chose, never as root, with the message on stdin or appended under the
mailbox locks.  Address data reaches a command only through environment
variables (SENDER, RECIPIENT...), never its command line, and commands run
with a fixed PATH in the target user's home.  A command's exit status is
read as sysexits: 0 delivered, EX_TEMPFAIL (and EX_OSERR, EX_IOERR) try
again later, anything else bounces with a short, clean excerpt of the
command's first output line (log.excerpt), never more of what it printed.
"""

import errno
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass

from ..core.asuser import become
from ..core.errors import os_error_status
from ..core.log import excerpt
from ..lda import deliver
from ..store.format import from_line
from ..store.prepare import DeliveryError, prepare

SOFT_EXITS = {os.EX_TEMPFAIL, os.EX_OSERR, os.EX_IOERR}
EXIT_DSN = {
    os.EX_NOUSER: "5.1.1", os.EX_NOHOST: "5.1.2", os.EX_DATAERR: "5.6.0",
    os.EX_NOPERM: "5.7.0", os.EX_CANTCREAT: "5.2.0", os.EX_CONFIG: "5.3.5",
    os.EX_PROTOCOL: "5.5.0",
}
COMMAND_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass
class Result:
    status: str            # sent | deferred | bounced
    dsn: str
    reply: str
    relay: str


def deliver_target(cfg, target, message, *, sender, recipient, queue_id, once=None):
    """Deliver MESSAGE (a seekable binary file, LF) to one local TARGET.

    ONCE (once.AppendOnce) makes a mailbox delivery exact across crashes."""
    message.seek(0)
    if target.kind == "mailbox":
        results = []
        mailboxes = MailboxDeliveries(cfg)
        mailboxes.add(None, target.user, message, sender=sender, recipient=recipient, queue_id=queue_id,
                      once=once, delivered=lambda result, _seconds: results.append(result))
        mailboxes.flush()
        return results[0]
    handler = {"file": _file, "command": _command}[target.kind]
    return handler(cfg, target, message, sender=sender, recipient=recipient, queue_id=queue_id)


class MailboxDeliveries:
    """The mailbox deliveries of a batch, appended mailbox by mailbox, each mailbox's at once.

    `add()` prepares the message at once (the caller's file may be gone by
    `flush()`); `flush()` appends and calls each delivery's
    `delivered(Result, seconds)`.  A delivery belongs to an OWNER (the
    worker's Attempt): `forget(owner)` drops those of an attempt that
    failed, and an unexpected error while appending to one mailbox marks
    the owners of its deliveries failed (their messages go back to the
    runner, as after a crash) without touching the other mailboxes."""

    def __init__(self, cfg, logger=None):
        self.cfg = cfg
        self.logger = logger
        self.waiting = {}                # user name -> (User, [(owner, Delivery, delivered)])

    def add(self, owner, user, message, *, sender, recipient, queue_id, once, delivered):
        message.seek(0)
        try:
            prepared = prepare(message, max_size=self.cfg.delivery.max_message_size)
        except DeliveryError as exc:
            return delivered(_failure(exc), 0.0)
        except OSError as exc:
            return delivered(Result("deferred", "4.3.0", f"mailbox: {exc.strerror}", "local"), 0.0)
        job = deliver.Delivery(prepared, sender=sender, recipient=recipient, queue_id=queue_id, once=once)
        self.waiting.setdefault(user.name, (user, []))[1].append((owner, job, delivered))
        return None

    def forget(self, owner):
        for _user, jobs in self.waiting.values():
            for job in [j for j in jobs if j[0] is owner]:
                jobs.remove(job)
                job[1].prepared.close()

    def flush(self):
        waiting, self.waiting = self.waiting, {}
        for user, jobs in waiting.values():
            try:
                self._append(user, jobs)
            except Exception as exc:     # noqa: BLE001 - this mailbox's messages go back to the runner
                if any(owner is None for owner, _job, _delivered in jobs):
                    raise
                if self.logger is not None:
                    self.logger.exception("%s: delivering to the mailbox failed", user.spool)
                for owner, _job, _delivered in jobs:
                    owner.outcome.error = exc
            finally:
                for _owner, job, _delivered in jobs:
                    job.prepared.close()

    def _append(self, user, jobs):
        if not jobs:
            return
        started = time.time()
        errors = deliver.deliver_all(self.cfg, user, [job for _owner, job, _delivered in jobs],
                                     lock_timeout=self.cfg.queue.mailbox_lock_wait)
        seconds = time.time() - started
        for (_owner, _job, delivered), error in zip(jobs, errors):
            delivered(Result("sent", "2.0.0", f"delivered to mailbox {user.spool}", "local") if error is None
                      else _failure(error), seconds)


def _failure(exc):
    if exc.temporary or exc.status in SOFT_EXITS:
        return Result("deferred", "4.2.0", str(exc), "local")
    return Result("bounced", EXIT_DSN.get(exc.status, "5.2.0"), str(exc), "local")


def _delivery_headers(sender, recipient):
    return (f"Return-Path: <{sender}>\n".encode("utf-8", "replace")
            + f"Delivered-To: {recipient}\n".encode("utf-8", "replace"))


def _file(cfg, target, message, *, sender, recipient, queue_id):
    """Append to an mbox file as the target's owner, in a child process."""
    if target.value == "/dev/null":
        return Result("sent", "2.0.0", "discarded to /dev/null", "file")
    prepared = prepare(message)
    try:
        return _file_child(cfg, target, prepared, sender=sender, recipient=recipient)
    finally:
        prepared.close()


def _file_child(cfg, target, prepared, *, sender, recipient):
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:                                    # the child: never returns
        os.close(read_end)
        status = os.EX_SOFTWARE
        try:
            become(target.run_as)
            status = _append_mbox(cfg, target.value, prepared, sender, recipient, target.run_as)
        except OSError as exc:
            os.write(write_end, f"{target.value}: {exc.strerror}".encode()[:500])
            status = os_error_status(exc, os.EX_CANTCREAT)
        except BaseException as exc:                # noqa: BLE001 - report, then _exit
            os.write(write_end, f"{target.value}: {exc}".encode()[:500])
            status = os.EX_TEMPFAIL
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        reason = pipe.read(1000).decode("utf-8", "replace")
    _pid, wait_status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(wait_status)
    if code == 0:
        return Result("sent", "2.0.0", f"delivered to file {target.value}", "file")
    if code in SOFT_EXITS or code < 0:
        return Result("deferred", "4.2.0", reason or f"file delivery failed ({code})", "file")
    return Result("bounced", EXIT_DSN.get(code, "5.2.0"), reason or f"cannot write {target.value}", "file")


def _append_mbox(cfg, path, prepared, sender, recipient, owner):
    """Append to an mbox file through the store, as to a mailbox: locks, crash record, separator, fsync."""
    from ..store.mailbox import Mailbox, MailboxError
    try:
        box = Mailbox(path, cfg, owner=owner, check_owner=False)
        try:
            box.create(0o600)
            with box.locked():
                box.append(prepared, sender=sender or "MAILER-DAEMON",
                           extra_headers=[_delivery_headers(sender, recipient)])
        finally:
            box.close()
    except MailboxError as exc:
        raise OSError(errno.EPERM, str(exc)) from None
    return 0


def _command(cfg, target, message, *, sender, recipient, queue_id):
    """Run the command with the message on stdin, as the target's user."""
    run_as = target.run_as
    home = run_as.home if run_as else os.environ.get("HOME", "/")
    local, _at, domain = recipient.rpartition("@")
    env = {
        "PATH": COMMAND_PATH, "SHELL": "/bin/sh", "HOME": home,
        "USER": run_as.name if run_as else os.environ.get("USER", ""),
        "LOGNAME": run_as.name if run_as else os.environ.get("USER", ""),
        "SENDER": sender, "RECIPIENT": recipient, "LOCAL": local or recipient,
        "DOMAIN": domain, "QUEUE_ID": queue_id, "LANG": "C",
    }
    with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as output:
        stdin.write(b"From " + from_line(sender).encode("utf-8", "replace") + b"\n")
        stdin.write(_delivery_headers(sender, recipient))
        _copy(message, stdin)
        stdin.seek(0)
        identity = {}
        if run_as:
            identity = {"user": run_as.uid, "group": run_as.gid, "extra_groups": []}
        try:
            proc = subprocess.Popen(["/bin/sh", "-c", target.value], stdin=stdin, stdout=output,
                                    stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                    cwd=home if os.path.isdir(home) else "/", **identity)
        except OSError as exc:
            return Result("deferred", "4.3.0", f"cannot run command: {exc.strerror}", "command")
        try:
            code = proc.wait(timeout=cfg.queue.command_timeout or None)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return Result("deferred", "4.3.0", "command time limit exceeded", "command")
        output.seek(0)
        said = excerpt(output.read(4096).decode("utf-8", "replace"))
    if code == 0:
        return Result("sent", "2.0.0", f"delivered to command: {target.value}", "command")
    reason = f"command exited with status {code}" if code > 0 else f"command killed by signal {-code}"
    reason += f": {said}" if said else ""
    if code < 0 or code in SOFT_EXITS:
        return Result("deferred", "4.3.0", reason, "command")
    return Result("bounced", EXIT_DSN.get(code, "5.3.0"), reason, "command")


def _copy(src, dst):
    while True:
        chunk = src.read(1 << 16)
        if not chunk:
            return
        dst.write(chunk)
