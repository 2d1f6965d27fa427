"""A message made ready for an mbox, once, whoever appends it.

Line ends become LF, a leading envelope `From ` line is dropped, the
headers the store owns (Status:, X-UID:, X-IMAPbase:, Content-Length:...)
are stripped so that no sender can set flags or UIDs, and body `From `
lines are quoted (mboxrd); an IMAP APPEND keeps the message exactly
instead (`quote=False`).  Header lines are kept whole whatever their
length: nothing of a message is changed beyond what the mbox format needs.
The header stays in memory and the body too while it is small (up to
IN_MEMORY), else it goes to an anonymous temporary file, so any number of
spools get the same bytes without reading the message twice.
"""

import io
import os
import re
import zlib

from ..core.errors import Fatal
from .format import STRIP_ON_DELIVERY, quote_from_lines

_CHUNK = 1 << 20
IN_MEMORY = 1 << 20             # a body up to this size is kept in memory, a bigger one in a temporary file
_HEADER_NAME = re.compile(rb"[!-9;-~]+")        # RFC 5322 ftext


class DeliveryError(Fatal):
    """A message that cannot be delivered now (EX_TEMPFAIL) or at all (another sysexits status)."""

    @property
    def temporary(self):
        return self.status == os.EX_TEMPFAIL


class PreparedMessage:
    """A message made ready for mbox: header bytes in memory, the body in memory or a temporary file.

    `exact` is set for a message stored as given (IMAP APPEND, copies of
    stored messages): its body was not quoted, so the store gives it a
    Content-Length.  `body_crc` is the CRC-32 of the body, for the crash
    record; `body_ends_line` whether it ends with a newline.
    """

    def __init__(self, header_bytes, body_file, body_size, *, exact=False, body_crc=0, body_ends_line=True):
        self.header_bytes = header_bytes
        self.body_file = body_file
        self.body_size = body_size
        self.exact = exact
        self.body_crc = body_crc
        self.body_ends_line = body_ends_line

    @property
    def size(self):
        return len(self.header_bytes) + 1 + self.body_size

    def body_chunks(self):
        self.body_file.seek(0)
        while chunk := self.body_file.read(_CHUNK):
            yield chunk

    def body_bytes(self):
        """The whole body, when it is small enough to be kept in memory; else None."""
        if isinstance(self.body_file, io.BytesIO):
            return self.body_file.getvalue()
        return None

    def close(self):
        self.body_file.close()


def _is_header_line(line):
    colon = line.find(b":")
    return colon > 0 and _HEADER_NAME.fullmatch(line[:colon].rstrip(b" \t")) is not None


def prepare(stream, max_size=0, *, quote=True):
    """Read a message from a binary stream into a PreparedMessage; EX_DATAERR if empty or too big.

    With `quote` (delivery) body lines matching ^>*From  get one more '>';
    without, the message is kept exactly (`exact`).
    """
    total = 0
    headers = []
    keep = False                    # whether the current (possibly folded) header is kept
    seen_header = False
    first = True
    body_start = b""
    while line := _whole_line(stream, max_size - total if max_size else 0, max_size):
        total += len(line)
        line = _lf(line)
        if first:
            first = False
            if line.startswith(b"From "):
                continue            # an envelope line from the caller, not a header
        if line == b"\n":
            break
        if line[:1] in (b" ", b"\t") and seen_header:
            if keep:
                headers.append(line)
            continue
        if not _is_header_line(line):
            body_start = line       # not a header: the body starts here
            break
        seen_header = True
        keep = line.split(b":", 1)[0].strip().lower() not in STRIP_ON_DELIVERY
        if keep:
            headers.append(line if line.endswith(b"\n") else line + b"\n")
    if total == 0:
        raise DeliveryError(os.EX_DATAERR, "empty message")
    body = io.BytesIO()
    body_size = 0
    crc = 0
    last = b"\n"
    carry = body_start
    while True:
        chunk = stream.read(_CHUNK)
        total += len(chunk)
        if max_size and total > max_size:
            body.close()
            raise DeliveryError(os.EX_DATAERR, f"message larger than {max_size} bytes")
        data = carry + chunk
        if chunk:
            cut = data.rfind(b"\n") + 1
            data, carry = data[:cut], data[cut:]
        else:
            carry = b""
        if data:
            out = data.replace(b"\r\n", b"\n")
            if quote:
                out = quote_from_lines(out)
            if body_size + len(out) > IN_MEMORY and isinstance(body, io.BytesIO):
                body = _to_file(body)
            body.write(out)
            body_size += len(out)
            crc = zlib.crc32(out, crc)
            last = out[-1:]
        if not chunk:
            break
    return PreparedMessage(b"".join(headers), body, body_size, exact=not quote, body_crc=crc,
                           body_ends_line=last == b"\n")


def _whole_line(stream, room, limit):
    """The next line however long (a header line is never cut), or b"" at the end; EX_DATAERR past ROOM bytes."""
    parts = []
    got = 0
    while True:
        piece = stream.readline(_CHUNK)
        got += len(piece)
        if room and got > room:
            raise DeliveryError(os.EX_DATAERR, f"message larger than {limit} bytes")
        parts.append(piece)
        if not piece or piece.endswith(b"\n"):
            return b"".join(parts)


def _to_file(memory):
    """The body so far moved from memory into a temporary file, positioned at its end."""
    spool = temporary_file()
    spool.write(memory.getbuffer())
    return spool


def temporary_file():
    """An anonymous temporary file (O_TMPFILE: nothing to clean up, no tempfile import)."""
    directory = os.environ.get("TMPDIR", "/tmp")
    try:
        fd = os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except (OSError, AttributeError):
        import tempfile
        return tempfile.TemporaryFile(prefix="mailsuite-")
    return open(fd, "w+b")


def prepare_bytes(data, max_size=0, *, quote=True):
    import io
    return prepare(io.BytesIO(data), max_size, quote=quote)


def _lf(line):
    return line[:-2] + b"\n" if line.endswith(b"\r\n") else line
