"""A message made ready for an mbox, once, whoever appends it.

Line ends become LF, a leading envelope `From ` line is dropped, the
headers the store owns (Status:, X-UID:, X-IMAPbase:, Content-Length:...)
are stripped so that no sender can set flags or UIDs, and body `From `
lines are quoted (mboxrd).  The header stays in memory and the body goes
to an anonymous temporary file, so any number of spools get the same
bytes without reading the message twice.
"""

import os
import re

from .format import STRIP_ON_DELIVERY, quote_from_lines

_CHUNK = 1 << 20
_HEADER_NAME = re.compile(rb"[!-9;-~]+")        # RFC 5322 ftext


class DeliveryError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status

    @property
    def temporary(self):
        return self.status == os.EX_TEMPFAIL


class PreparedMessage:
    """A message made ready for mbox: header bytes in memory, the quoted body in a temporary file."""

    def __init__(self, header_bytes, body_file, body_size):
        self.header_bytes = header_bytes
        self.body_file = body_file
        self.body_size = body_size

    @property
    def size(self):
        return len(self.header_bytes) + 1 + self.body_size

    def body_chunks(self):
        self.body_file.seek(0)
        while chunk := self.body_file.read(_CHUNK):
            yield chunk

    def close(self):
        self.body_file.close()


def _is_header_line(line):
    colon = line.find(b":")
    return colon > 0 and _HEADER_NAME.fullmatch(line[:colon].rstrip(b" \t")) is not None


def prepare(stream, max_size=0):
    """Read a message from a binary stream into a PreparedMessage; EX_DATAERR if empty or too big."""
    total = 0
    headers = []
    keep = False                    # whether the current (possibly folded) header is kept
    seen_header = False
    first = True
    body_start = b""
    while line := stream.readline(_CHUNK):
        total += len(line)
        if max_size and total > max_size:
            raise DeliveryError(os.EX_DATAERR, f"message larger than {max_size} bytes")
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
    body = temporary_file()
    body_size = 0
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
            out = quote_from_lines(data.replace(b"\r\n", b"\n"))
            body.write(out)
            body_size += len(out)
        if not chunk:
            break
    return PreparedMessage(b"".join(headers), body, body_size)


def temporary_file():
    """An anonymous temporary file (O_TMPFILE: nothing to clean up, no tempfile import)."""
    directory = os.environ.get("TMPDIR", "/tmp")
    try:
        fd = os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except (OSError, AttributeError):
        import tempfile
        return tempfile.TemporaryFile(prefix="mailsuite-")
    return open(fd, "w+b")


def prepare_bytes(data, max_size=0):
    import io
    return prepare(io.BytesIO(data), max_size)


def _lf(line):
    return line[:-2] + b"\n" if line.endswith(b"\r\n") else line
