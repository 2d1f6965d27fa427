"""The durable mail queue: one file per message, moved between state directories.

A queue file's layout is queuefile.py's; this module is the directory
around the files: states, claims, recovery and the operator's moves.
A message's state is the directory it sits in:

    incoming/   accepted, waiting for its first delivery attempt
    active/     a delivery worker holds it (and an flock on it)
    deferred/   waiting for a retry; the file's mtime is the next attempt time
    hold/       set aside by the operator; never delivered until released

`enqueue()` writes tmp/ID under an flock, fsyncs it, renames it into
incoming/ and fsyncs the directory before it returns: only then may anyone
answer 250 or exit 0.  What a writer that died left in tmp/ is removed by
`clean_tmp()` (the runner calls it at start-up and at every scan).

A worker claims a message by taking an flock on the file, renaming it into
active/ and recording the attempt; the lock dies with the worker, so
`recover()` can tell an orphan (the message of a worker that crashed or
was killed) from one being delivered.  An orphan counts as a crash: it
goes to deferred/ with the same back-off as a failed attempt, and after
`hold_after_crashes` crashes to hold/, where mailq shows it with the reason
until the operator releases it.  So a message that kills its worker costs
a few attempts, not a fork loop.
"""

import errno
import fcntl
import io
import os
import time

from ..core import fileio
from .queuefile import (
    CHUNK,
    QueueError,
    QueueFull,
    Section,
    append_record,
    as_file,
    copy_lf,
    fold_record,
    preamble,
    read_envelope,
    record_line,
)
from .queueid import new_id, valid_id  # noqa: F401 - part of this module's interface

STATES = ("incoming", "active", "deferred", "hold")
TMP_GRACE = 10          # seconds: an unlocked file in tmp/ younger than this may be about to be renamed
_PRESENT = set()        # queue directories this process made sure of


def backoff(cfg, attempts):
    """Seconds to wait after ATTEMPTS failed attempts: doubling from min_backoff, capped."""
    low, high = cfg.queue.min_backoff, cfg.queue.max_backoff
    return min(high, low * (2 ** max(0, attempts - 1)))


class Busy(QueueError):
    """The message is being delivered right now; try again in a moment."""

    status = os.EX_TEMPFAIL


class NoPermission(QueueError):
    """This user may not read (or change) the queue, which is root's."""

    status = os.EX_NOPERM


class Queue:
    """The queue directory of `cfg.mailsuite.queue_dir`."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.dir = cfg.mailsuite.queue_dir
        self.min_free = cfg.queue.min_free_space

    # --- layout --------------------------------------------------------

    def check_access(self, *, write=False):
        """Raise NoPermission unless this process may read (and, with WRITE, change) the queue."""
        mode = os.R_OK | os.X_OK | (os.W_OK if write else 0)
        if os.path.isdir(self.dir) and not os.access(self.dir, mode):
            raise NoPermission(f"{self.dir}: permission denied: only root may "
                               f"{'run or change' if write else 'list'} the mail queue")

    def ensure_dirs(self):
        """Create the queue directories (0700) when missing."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        for name in ("tmp",) + STATES:
            os.makedirs(os.path.join(self.dir, name), mode=0o700, exist_ok=True)
        _PRESENT.add(self.dir)

    def _path(self, state, qid):
        return os.path.join(self.dir, state, qid)

    def locate(self, qid):
        """(state, path) of message QID; raises QueueError when it is not queued."""
        if not valid_id(qid):
            raise QueueError(f"{qid}: not a queue id")
        for state in STATES:
            path = self._path(state, qid)
            if os.path.exists(path):
                return state, path
        raise QueueError(f"{qid}: no such message in the queue")

    def exists(self, qid):
        try:
            self.locate(qid)
            return True
        except QueueError:
            return False

    # --- writing -------------------------------------------------------

    def enqueue(self, sender, recipients, data, *, received=None, client=None, auth_user=None,
                dsn=None, qid=None, origin=None, arrival=None):
        """Store a message durably in incoming/ and return its queue id.

        DATA is bytes or a binary file (LF, CRLF or mixed line ends: stored as
        LF); RECEIVED, if given, is a header block put in front of it.
        Raises QueueFull when the disk is full; nothing is left behind."""
        if not recipients:
            raise ValueError("a message needs at least one recipient")
        if self.dir not in _PRESENT:             # once per process (a session process enqueues many)
            self.ensure_dirs()
        self._check_space()
        qid = qid or new_id()
        tmp = os.path.join(self.dir, "tmp", f"{qid}.{os.getpid()}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            try:
                fd = os.open(tmp, flags, 0o600)
            except FileNotFoundError:           # the directories went away since: make them again
                self.ensure_dirs()
                fd = os.open(tmp, flags, 0o600)
        except OSError as exc:
            raise _full_or(exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)          # tells clean_tmp() its writer is alive
            with open(fd, "wb", buffering=CHUNK) as out:
                envelope = {
                    "id": qid, "sender": sender, "recipients": list(recipients),
                    "arrival": arrival or time.time(), "queued": time.time(), "client": client,
                    "auth_user": auth_user, "dsn": dsn or {}, "origin": origin,
                }
                out.write(preamble(0))
                out.write(record_line(envelope))
                size = copy_lf(as_file(data), out, prefix=received or b"")
                out.flush()
                os.pwrite(out.fileno(), preamble(size), 0)
                os.fsync(out.fileno())
                fcntl.flock(out.fileno(), fcntl.LOCK_UN)    # a runner may claim it the moment it is renamed
            final = self._path("incoming", qid)
            if os.path.exists(final) or any(os.path.exists(self._path(s, qid)) for s in STATES):
                raise FileExistsError(errno.EEXIST, "queue id in use", qid)
            os.rename(tmp, final)
            fileio.fsync_dir(os.path.dirname(final))
        except BaseException as exc:
            fileio.unlink_quietly(tmp)
            if isinstance(exc, OSError) and not isinstance(exc, FileExistsError):
                raise _full_or(exc) from None
            raise
        return qid

    def _check_space(self):
        if not self.min_free:
            return
        try:
            st = os.statvfs(self.dir)
        except OSError:
            return
        if st.f_bavail * st.f_frsize < self.min_free:
            raise QueueFull(f"{self.dir}: less than {self.min_free} bytes free")

    # --- reading -------------------------------------------------------

    def load(self, qid):
        """The Envelope of QID, wherever it is."""
        for _try in range(3):               # it may move between locate() and open()
            state, path = self.locate(qid)
            try:
                with open(path, "rb") as f:
                    envelope = read_envelope(f, path)
                    envelope.state = state
                    envelope.mtime = os.fstat(f.fileno()).st_mtime
                    return envelope
            except FileNotFoundError:
                continue
        raise QueueError(f"{qid}: no such message in the queue")

    def ids(self, states=STATES):
        """(state, id) of every queued message, oldest first."""
        found = []
        for state in states:
            try:
                names = os.listdir(os.path.join(self.dir, state))
            except FileNotFoundError:
                continue
            found.extend((name, state) for name in names if valid_id(name))
        return [(state, qid) for qid, state in sorted(found)]

    def envelopes(self, states=STATES):
        """Every readable Envelope, oldest first (messages that vanish meanwhile are skipped)."""
        for _state, qid in self.ids(states):
            try:
                yield self.load(qid)
            except QueueError:
                continue

    def due(self, now=None):
        """Ids ready for a delivery attempt: all of incoming/, deferred/ whose time has come."""
        now = time.time() if now is None else now
        ready = [qid for _s, qid in self.ids(("incoming",))]
        deferred = os.path.join(self.dir, "deferred")
        for _s, qid in self.ids(("deferred",)):
            try:
                if os.stat(os.path.join(deferred, qid)).st_mtime <= now:
                    ready.append(qid)
            except FileNotFoundError:
                continue
        return ready

    def next_due(self):
        """The earliest retry time in deferred/, or None."""
        times = []
        for _s, qid in self.ids(("deferred",)):
            try:
                times.append(os.stat(self._path("deferred", qid)).st_mtime)
            except FileNotFoundError:
                continue
        return min(times, default=None)

    # --- delivery ------------------------------------------------------

    def claim(self, qid, states=("incoming", "deferred")):
        """Take QID for delivery: a Claim, or None if it is gone or someone else has it."""
        for state in states:
            path = self._path(state, qid)
            try:
                fd = _lock_file(path)
            except (OSError, Busy):             # not in this state, or someone else has it
                continue
            try:
                os.rename(path, self._path("active", qid))
            except OSError:
                os.close(fd)
                continue
            claim = Claim(self, qid, fd)
            claim.record(attempt=round(time.time(), 3), pid=os.getpid())   # counted even if we are killed
            return claim
        return None

    def recover(self, reasons=None, retry_now=()):
        """Take back the messages of workers that died: {id: where it went}.

        REASONS maps a queue id to how its worker ended, when the caller saw
        it; the ids in RETRY_NOW (the others of a dead worker's batch) are
        due again at once instead of after the back-off."""
        moved = {}
        for _s, qid in self.ids(("active",)):
            try:
                fd = _lock_file(self._path("active", qid))
            except (OSError, Busy):             # gone, or its worker is alive after all
                continue
            try:
                moved[qid] = self._after_crash(qid, fd, (reasons or {}).get(qid, "its delivery worker died"),
                                               qid in retry_now)
            except OSError:
                pass
            finally:
                os.close(fd)
        for state in set(moved.values()):
            fileio.fsync_dir(os.path.join(self.dir, state))
        return moved

    def _after_crash(self, qid, fd, reason, retry_now=False):
        """Record the crash of QID's worker; to deferred/ with back-off, or hold/ after a few."""
        path = self._path("active", qid)
        try:
            with open(os.dup(fd), "rb") as f:
                envelope = read_envelope(f, path)
        except QueueError:
            os.makedirs(os.path.join(self.dir, "corrupt"), mode=0o700, exist_ok=True)
            os.rename(path, os.path.join(self.dir, "corrupt", qid))
            return "corrupt"
        append_record(fd, {"crashed": round(time.time(), 3), "reason": reason})
        crashes = envelope.crashes + 1
        if crashes >= self.cfg.queue.hold_after_crashes:
            append_record(fd, {"held": round(time.time(), 3),
                         "reason": f"held after {crashes} crashes of its delivery worker (last: {reason})"})
            os.rename(path, self._path("hold", qid))
            return "hold"
        retry = time.time() + (0 if retry_now else backoff(self.cfg, envelope.attempts))
        os.utime(fd, (retry, retry))
        os.rename(path, self._path("deferred", qid))
        return "deferred"

    def clean_tmp(self, min_age=TMP_GRACE):
        """Remove what writers that died (a killed SMTP session, a crash) left in tmp/: the names."""
        directory = os.path.join(self.dir, "tmp")
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return []
        removed = []
        for name in names:
            path = os.path.join(directory, name)
            try:
                fd = _lock_file(path, os.O_RDONLY | os.O_NONBLOCK)
            except (OSError, Busy):             # a live writer holds it
                continue
            try:
                if time.time() - os.fstat(fd).st_mtime < min_age:
                    continue
                os.unlink(path)
                removed.append(name)
            except OSError:
                pass
            finally:
                os.close(fd)
        return removed

    # --- the operator --------------------------------------------------

    def _move(self, qid, to_state, *, mtime=None, allowed=STATES, record=None):
        state, path = self.locate(qid)
        if state not in allowed:
            raise QueueError(f"{qid}: message is {state}")
        fd = _lock_file(path)
        try:
            if record:
                append_record(fd, record)
            target = self._path(to_state, qid)
            if mtime is not None:
                os.utime(fd, (mtime, mtime))
            if target != path:
                os.rename(path, target)
                fileio.fsync_dir(os.path.dirname(target))
        finally:
            os.close(fd)

    def hold(self, qid):
        """Set QID aside: it stays queued but is never delivered until released."""
        self._move(qid, "hold", allowed=("incoming", "deferred", "hold"),
                   record={"held": round(time.time(), 3), "reason": "held by the operator"})

    def release(self, qid):
        """Put a held message back, due at once, its crash count cleared."""
        self._move(qid, "deferred", mtime=time.time(), allowed=("hold",),
                   record={"released": round(time.time(), 3)})

    def flush(self, qid=None):
        """Make QID (or every deferred message) due now."""
        targets = [qid] if qid else [q for _s, q in self.ids(("deferred",))]
        for one in targets:
            try:
                self._move(one, "deferred", mtime=time.time(), allowed=("deferred", "incoming"))
            except (Busy, QueueError):
                if qid:
                    raise

    def delete(self, qid):
        """Remove QID from the queue without any notification."""
        state, path = self.locate(qid)
        fd = _lock_file(path, os.O_RDONLY)
        try:
            os.unlink(path)
            fileio.fsync_dir(os.path.dirname(path))
        finally:
            os.close(fd)


def _lock_file(path, flags=os.O_RDWR | os.O_APPEND):
    """An fd on PATH holding the flock every user of a queue file takes first.

    Busy when another process holds it (a delivery worker, a writer not
    done yet); OSError when the file is gone or cannot be opened."""
    fd = os.open(path, flags | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise Busy(f"{os.path.basename(path)}: being delivered right now; try again") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


class Claim:
    """A message held by one delivery worker (flock + active/)."""

    def __init__(self, queue, qid, fd):
        self.queue = queue
        self.id = qid
        self.fd = fd
        self.path = queue._path("active", qid)
        with open(os.dup(fd), "rb") as f:
            self.envelope = read_envelope(f, self.path)
        self.envelope.state = "active"

    def message(self):
        """The message as a seekable binary file starting at offset 0."""
        env = self.envelope
        return io.BufferedReader(Section(self.fd, env.offset, env.size), CHUNK)

    def record(self, **fields):
        """Append one delivery record (not synced: see worker.py) and fold it into the envelope."""
        fields.setdefault("at", round(time.time(), 3))
        append_record(self.fd, fields, self.id, sync=False)
        fold_record(self.envelope, fields)

    def done(self, *, sync=True):
        """Every recipient is final: remove the message.  Without SYNC the caller fsyncs active/."""
        os.unlink(self.path)
        if sync:
            fileio.fsync_dir(os.path.dirname(self.path))
        self.release()

    def defer(self, next_attempt):
        """Back to deferred/, due at NEXT_ATTEMPT (epoch seconds), its records synced first."""
        os.fsync(self.fd)
        os.utime(self.fd, (next_attempt, next_attempt))
        target = self.queue._path("deferred", self.id)
        os.rename(self.path, target)
        fileio.fsync_dir(os.path.dirname(target))
        self.release()

    def release(self):
        """Let go of the message; one still in active/ is then an orphan for recover()."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        # a worker that dies here leaves the file in active/ for recover()
        self.release()
        return False


def _full_or(exc):
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return QueueFull(f"queue: {exc.strerror}")
    return exc
