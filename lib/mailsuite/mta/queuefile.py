"""One queue file: what it holds and how it is written and read back.

A queue file holds, in this order: a fixed-width preamble (magic, format
version, message size), the envelope (one JSON line), the message
itself (LF line ends), and then an append-only log of delivery records, one
JSON line each (a recipient was sent, deferred or bounced; an attempt was
made; bounces were sent).  The message is never rewritten; progress is a
record appended with O_APPEND, so a crash at any point leaves a file that
loads: a torn last record is ignored.
"""

import io
import json
import os
from dataclasses import dataclass, field

from ..core.errors import ExitError

CHUNK = 64 * 1024
MAGIC = "mailsuite-queue"
VERSION = 1


class QueueError(ExitError):
    """A queue file is missing, unreadable or not ours."""

    status = os.EX_NOINPUT


class QueueFull(QueueError):
    """No room for the message (ENOSPC, EDQUOT, or less than min_free_space left).

    The SMTP side answers 452 4.3.1; sendmail exits EX_TEMPFAIL."""

    status = os.EX_TEMPFAIL


@dataclass
class Envelope:
    """What a queue file says about one message, its records folded in."""

    id: str
    sender: str
    recipients: list
    arrival: float                    # when its sender started handing it over (MAIL, the drop file)
    size: int
    offset: int                       # where the message starts in the file
    client: str | None = None
    auth_user: str | None = None
    dsn: dict = field(default_factory=dict)
    origin: str | None = None         # the maildrop file it came from, for duplicate detection
    state: str = "incoming"
    mtime: float = 0.0                # in deferred/: the next attempt time
    results: dict = field(default_factory=dict)    # (rcpt, target) -> last record
    attempts: int = 0                 # claims by a delivery worker
    reason: str | None = None         # why the last attempt deferred
    crashes: int = 0                  # attempts whose worker died, since the last release
    held: str | None = None           # why the queue set it aside (hold/)
    notified: set = field(default_factory=set)     # recipients whose bounce was sent
    queued: float = 0.0               # when it was safely in the queue (the logs' delays=a/b/c/d)

    def result(self, recipient, target):
        return self.results.get((recipient, target))


def record_line(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode("ascii") + b"\n"


def append_record(fd, record, qid="", *, sync=True):
    """One record at the end of a queue file opened with O_APPEND; fsynced unless SYNC is false.

    An unsynced record is seen by every later reader even if this process
    is killed; only a power cut can lose it (see worker.py for who syncs)."""
    data = record_line(record)
    if os.write(fd, data) != len(data):
        raise QueueFull(f"{qid}: short write of a delivery record")
    if sync:
        os.fsync(fd)


def preamble(size):
    """The fixed-width first line: magic, format version, message size."""
    return f"{MAGIC} {VERSION} {size:015d}\n".encode("ascii")


PREAMBLE_SIZE = len(preamble(0))


def read_envelope(f, path):
    try:
        magic, version, size = f.read(PREAMBLE_SIZE).decode("ascii").split()
        if magic != MAGIC or int(version) != VERSION:
            raise ValueError("not a queue file")
        line = f.readline(1 << 20)
        data = json.loads(line)
        env = Envelope(id=data["id"], sender=data["sender"], recipients=list(data["recipients"]),
                       arrival=float(data["arrival"]), size=int(size),
                       offset=PREAMBLE_SIZE + len(line),
                       client=data.get("client"), auth_user=data.get("auth_user"),
                       dsn=data.get("dsn") or {}, origin=data.get("origin"),
                       queued=float(data.get("queued") or data["arrival"]))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise QueueError(f"{path}: damaged queue file ({exc})") from None
    f.seek(env.offset + env.size)
    for line in f:
        if not line.endswith(b"\n"):
            break                       # torn by a crash: never acted upon
        try:
            fold_record(env, json.loads(line))
        except ValueError:
            continue
    return env


def fold_record(env, record):
    """Apply one delivery record to the envelope."""
    if "r" in record:
        env.results[(record["r"], record.get("t", ""))] = record
    elif "attempt" in record:
        env.attempts += 1
    elif "deferred" in record:
        env.reason = record.get("reason")
    elif "crashed" in record:
        env.crashes += 1
        env.reason = record.get("reason")
    elif "held" in record:
        env.held = record.get("reason")
    elif "released" in record:
        env.crashes, env.held = 0, None
    elif "notified" in record:
        env.notified.update(record["notified"])


class Section(io.RawIOBase):
    """A read-only window [offset, offset+size) of a file descriptor, seekable."""

    def __init__(self, fd, offset, size):
        super().__init__()
        self._fd, self._base, self._size, self._pos = fd, offset, size, 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def close(self):
        # the descriptor belongs to the Claim
        super().close()

    def readinto(self, buffer):
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        data = os.pread(self._fd, want, self._base + self._pos)
        buffer[:len(data)] = data
        self._pos += len(data)
        return len(data)

    def seek(self, pos, whence=io.SEEK_SET):
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def tell(self):
        return self._pos


def as_file(data):
    return io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data


def copy_lf(src, out, *, prefix=b""):
    """Copy SRC to OUT turning CRLF into LF; returns the bytes written."""
    size = 0
    if prefix:
        prefix = bytes(prefix).replace(b"\r\n", b"\n")
        if not prefix.endswith(b"\n"):
            prefix += b"\n"
        out.write(prefix)
        size += len(prefix)
    pending_cr = False
    while True:
        chunk = src.read(CHUNK)
        if not chunk:
            break
        if pending_cr:
            chunk = b"\r" + chunk
        pending_cr = chunk.endswith(b"\r")
        if pending_cr:
            chunk = chunk[:-1]
        chunk = chunk.replace(b"\r\n", b"\n")
        out.write(chunk)
        size += len(chunk)
    if pending_cr:
        out.write(b"\r")
        size += 1
    return size
