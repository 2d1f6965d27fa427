"""Scanning an mbox into an index of messages, in bounded memory.

Message boundaries are found the way Dovecot finds them, so that both
servers see the same messages in the same file:

* a message starts at a valid From_ line (`From SENDER DATE`, see
  `format.is_from_line`) at the start of the file or right after a
  newline; that newline belongs to the separator, not to the message
  before, and so does the last newline of the file;
* a `Content-Length:` header is trusted when the byte after the body it
  announces is the newline of a valid From_ line or the file's last byte;
  otherwise the body runs to the next valid From_ line.  Dovecot writes
  body lines starting with "From " unescaped and relies on this.

The file is walked in chunks with bytes.find; header blocks of any size are
parsed a chunk at a time (one regex pass per chunk for the store's
headers), and the counts a server needs (its size on the wire, what POP3
adds) are taken with bytes.count while the chunk is in memory.  A 1 GiB
spool, or a message with a 50 MB header, is never read into memory whole.
"""

import os
import re

from .format import (
    FROM_LINE_MAX,
    HIDDEN_LINE,
    STATUS_LETTERS,
    STORE_HEADERS,
    XSTATUS_LETTERS,
    MailboxError,
    is_from_line,
    valid_keyword,
)
from .table import FLAG_BITS, PSEUDO, Index, Message, TableBuilder  # noqa: F401  (Index, Message: the store's names)

CHUNK = 4 << 20
SEARCH_FOR_START = 1 << 20       # how far into a damaged file to look for its first From_ line

class _Window:
    """A sliding window over a file descriptor: bytes.find and slices across chunks, in bounded memory."""

    def __init__(self, fd, start, size):
        self.fd = fd
        self.size = size
        self.base = start
        self.buf = b""

    def _cover(self, lo, hi):
        """Make the buffer hold [lo, hi) (as far as the file goes), letting go of what lies before lo."""
        hi = min(hi, self.size)
        end = self.base + len(self.buf)
        if lo < self.base or lo > end:
            self.base, self.buf, end = lo, b"", lo
        elif end < hi and lo > self.base:
            self.buf = self.buf[lo - self.base:]
            self.base = lo
        while end < hi:
            chunk = os.pread(self.fd, max(CHUNK, hi - end), end)
            if not chunk:
                self.size = end
                break
            self.buf += chunk
            end += len(chunk)

    def find(self, pattern, lo, hi):
        """Absolute offset of the first occurrence of pattern starting in [lo, hi), or -1."""
        hi = min(hi, self.size)
        width = len(pattern)
        base, buf = self.base, self.buf
        if lo >= base:                      # the common case: answered from the buffer as it is
            stop = min(hi + width - 1, self.size) - base
            if stop <= len(buf):
                i = buf.find(pattern, lo - base, stop)
                return base + i if i >= 0 else -1
        while lo < hi:
            self._cover(lo, min(lo + max(CHUNK, width), hi + width - 1))
            end = self.base + len(self.buf)
            i = self.buf.find(pattern, lo - self.base, min(end, hi + width - 1) - self.base)
            if i >= 0:
                return self.base + i
            if end >= min(hi + width - 1, self.size):
                return -1
            lo = max(end - width + 1, lo + 1)
        return -1

    def get(self, lo, hi):
        if not (self.base <= lo and min(hi, self.size) <= self.base + len(self.buf)):
            self._cover(lo, hi)
        return self.buf[lo - self.base:hi - self.base]

    def count(self, pattern, lo, hi, rare=None):
        """Occurrences of a pattern of at most two bytes in [lo, hi).

        `rare`, a compiled regex for the same pattern, is searched first:
        a regex search runs on memchr and is several times faster than
        bytes.count when the pattern is usually absent (CRs, lines that
        start with a dot).
        """
        if lo >= hi:
            return 0
        if lo >= self.base and hi <= self.base + len(self.buf):
            if rare is not None and rare.search(self.buf, lo - self.base, hi - self.base) is None:
                return 0
            return self.buf.count(pattern, lo - self.base, hi - self.base)
        total = 0
        overlap = len(pattern) - 1
        pos = lo
        while pos < hi:
            piece = os.pread(self.fd, min(CHUNK, hi - pos) + overlap, pos)[:hi - pos]
            if not piece:
                break
            total += piece.count(pattern)
            if len(piece) <= overlap or pos + len(piece) >= hi:
                break
            pos += len(piece) - overlap
        return total


_CR = re.compile(rb"\r\n")
_DOT_LINE = re.compile(rb"\n\.")


class _HeaderFacts:
    """What the store needs from one header block, gathered a chunk at a time."""

    def __init__(self, store_names):
        self.store_names = store_names  # the headers of our block (X-IMAP too in a first message)
        self.values = {}                # the first value of each hidden header, whitespace folded
        self.block = None               # [start, end) of the contiguous store headers
        self.contiguous = True          # and whether they are contiguous lines, each ending in a newline
        self.served = 0                 # bytes of the served header so far
        self.pieces = 0
        self.from_inside = False        # a "\nFrom " in the header bytes (a separator may hide there)

    def feed(self, data, base):
        self.pieces += 1
        self.from_inside = self.from_inside or b"\nFrom " in data
        previous_end = self.block[1] if self.block else None
        hidden = hidden_newlines = hidden_crlf = 0
        for m in HIDDEN_LINE.finditer(data):
            text = m.group(0)
            hidden += len(text)
            hidden_newlines += text.count(b"\n")
            hidden_crlf += text.count(b"\r\n")
            name = m.group(1).lower()
            self.values.setdefault(name, b" ".join(m.group(2).split()))
            if name not in self.store_names:
                continue
            start, end = base + m.start(), base + m.end()
            if (previous_end is not None and start != previous_end) or not text.endswith(b"\n"):
                self.contiguous = False
            if self.block is None:
                self.block = [start, end]
            self.block[1] = previous_end = end
        # what a client is sent of these lines: the hidden ones out (each ends its line, so no CRLF is
        # made or split by taking them out), LF as CRLF
        crlf = data.count(b"\r\n") if b"\r" in data else 0
        self.served += (len(data) - hidden) + (data.count(b"\n") - hidden_newlines) - (crlf - hidden_crlf)

    def finish(self, last_line_open, blank_line):
        """Close the served size: a CRLF for an unterminated last line, one for the blank line."""
        self.served += 2 * last_line_open + 2 * blank_line

    def store_metadata(self):
        values = self.values
        mask = _flag_mask(values.get(b"status", b""), values.get(b"x-status", b""))
        keywords = _keywords(values.get(b"x-keywords", b""))
        raw_uid = values.get(b"x-uid", b"")
        uid = int(raw_uid) if raw_uid.isdigit() and len(raw_uid) < 11 else 0
        block = tuple(self.block) if self.block and self.contiguous else None
        return uid, mask, keywords, block

    @property
    def content_length(self):
        raw = self.values.get(b"content-length")
        return int(raw) if raw is not None and raw.isdigit() and len(raw) < 19 else None


_MASKS = {}
_KEYWORDS = {}


def _flag_mask(status, xstatus):
    """The flag bits of a Status: and an X-Status: value (a handful of distinct values: kept once)."""
    mask = _MASKS.get((status, xstatus))
    if mask is None:
        mask = 0
        for c in status.decode("latin-1"):
            if c in STATUS_LETTERS:
                mask |= FLAG_BITS[c]
        for c in xstatus.decode("latin-1"):
            if c in XSTATUS_LETTERS:
                mask |= FLAG_BITS[c]
        if len(_MASKS) < 4096:
            _MASKS[(status, xstatus)] = mask
    return mask


def _keywords(value):
    """The valid keywords of an X-Keywords: value (few distinct values: kept once)."""
    found = _KEYWORDS.get(value)
    if found is None:
        found = tuple(k for k in value.decode("utf-8", "replace").split() if valid_keyword(k))
        if len(_KEYWORDS) < 4096:
            _KEYWORDS[value] = found
    return found


def _field_boundary(piece):
    """Where to cut a chunk of header lines: after a newline that starts a new field (not a fold), else
    after any newline; 0 when the chunk holds no whole line."""
    i = piece.rfind(b"\n", 0, len(piece) - 1)
    while i >= 0 and piece[i + 1:i + 2] in (b" ", b"\t"):
        i = piece.rfind(b"\n", 0, i)
    if i < 0:
        i = piece.rfind(b"\n")
    return i + 1


FIRST_STORE_HEADERS = STORE_HEADERS | {b"x-imap"}


def _header_facts(window, lo, hi, first):
    """The facts of the header [lo, hi), parsed a few megabytes at a time, cut between lines."""
    facts = _HeaderFacts(FIRST_STORE_HEADERS if first else STORE_HEADERS)
    pos = lo
    while pos < hi:
        want = CHUNK
        while True:
            piece = window.get(pos, min(hi, pos + want))
            if pos + len(piece) >= hi:
                break
            cut = _field_boundary(piece)
            if cut:
                piece = piece[:cut]
                break
            want *= 2                   # one line longer than a chunk: read on to its end
        facts.feed(piece, pos)
        pos += len(piece)
    return facts


def _separator(window, lo, hi):
    """Offset of the newline of the first valid "\\nFrom " line whose newline lies in [lo, hi), or -1."""
    p = window.find(b"\nFrom ", lo, hi)
    while p >= 0:
        if is_from_line(window.get(p + 1, p + 1 + FROM_LINE_MAX)):
            return p
        p = window.find(b"\nFrom ", p + 1, hi)
    return -1


def _trusted_length(window, body, length, size):
    """(end, next start) from a Content-Length that ends at a valid separator or the file's last byte."""
    if length is None or body + length >= size:
        return None
    q = body + length
    after = window.get(q, min(q + 1 + FROM_LINE_MAX, size))
    if after == b"\n" and q + 1 == size:
        return q, size
    if after.startswith(b"\nFrom ") and is_from_line(after[1:]):
        return q, q + 1
    return None


def _content_end(window, lo, size):
    """The end of the last message: the file's final newline is the separator's, not the message's."""
    return size - 1 if size - 1 >= lo and window.get(size - 1, size) == b"\n" else size


def _parse_imapbase(value):
    parts = value.decode("utf-8", "replace").split()
    if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit() and int(parts[0]) > 0:
        return int(parts[0]), int(parts[1]), tuple(k for k in parts[2:] if valid_keyword(k))
    return None


def not_mbox_reason(fd, size):
    """Why a file that does not start with a From_ line is no mbox, and where to read how to repair it."""
    head = os.pread(fd, min(size, SEARCH_FOR_START), 0)
    first = head.find(b"\nFrom ")
    if first < 0:
        return f"not an mbox file: no From_ line in its first {len(head)} bytes"
    return (f"not an mbox file: {first + 1} bytes before its first From_ line "
            f"(`mailsuite check` says how to remove them)")


QUICK_AHEAD = 1 << 16             # the quick path needs at least this much of the file buffered ahead
_BODY_MARKS = re.compile(rb"\n(?:\.|From )")
_FIND_HIDDEN = HIDDEN_LINE.finditer


def _quick(buf, base, pos, size, builder):
    """Messages lying wholly in BUF (the file's bytes from BASE) from POS on, added to BUILDER; (pos, count).

    The common message, read straight from the buffer: one pass over the
    body finds both the next separator and the lines POP3 must stuff.
    Whatever is unusual (the first message of the file, an empty header, a
    header with a "From " line inside, a message running past the buffer)
    stops the quick path at that message and the caller's general path
    takes it, so both always find the same.
    """
    at_eof = base + len(buf) >= size
    limit = len(buf)
    count = 0
    while pos < size:
        p = pos - base
        nl = buf.find(b"\n", p)
        if nl < 0 or p < 0 or not pos or nl + 1 + base >= size:
            break
        blank = buf.find(b"\n\n", nl)
        if blank <= nl or blank + 1 - nl > CHUNK or base + blank + 2 >= size:
            break
        header = nl + 1
        data = buf[header:blank + 1]
        if b"\nFrom " in data:
            break
        # the header's facts, as _HeaderFacts gathers them, for a header in one piece
        values = {}
        hidden = hidden_newlines = hidden_crlf = 0
        block_lo = block_hi = -1
        contiguous = True
        for m in _FIND_HIDDEN(data):
            a, b = m.span()
            text = m.group(0)
            hidden += b - a
            hidden_newlines += text.count(b"\n")
            if b"\r" in text:
                hidden_crlf += text.count(b"\r\n")
            name = m.group(1).lower()
            if name not in values:
                values[name] = m.group(2)
            if name not in STORE_HEADERS:
                continue
            if (block_lo >= 0 and a != block_hi) or text[-1:] != b"\n":
                contiguous = False
            if block_lo < 0:
                block_lo = a
            block_hi = b
        crlf = data.count(b"\r\n") if b"\r" in data else 0
        served = (len(data) - hidden) + (data.count(b"\n") - hidden_newlines) - (crlf - hidden_crlf) + 2
        body = blank + 2
        found = None
        raw = values.get(b"content-length")
        raw = raw.strip() if raw is not None else None
        length = int(raw) if raw is not None and raw.isdigit() and len(raw) < 19 else None
        if length is not None and base + body + length < size:
            q = body + length
            if q + 1 + FROM_LINE_MAX > limit and not at_eof:
                break
            after = buf[q:q + 1 + FROM_LINE_MAX]
            if after == b"\n" and base + q + 1 == size:
                found = q, q + 1
            elif after.startswith(b"\nFrom ") and is_from_line(after[1:]):
                found = q, q + 1
        if found is None:
            if body + FROM_LINE_MAX > limit and not at_eof:
                break
            if buf.startswith(b"From ", body) and is_from_line(buf[body:body + FROM_LINE_MAX]):
                break               # the blank line is the separator: no body (the general path's case)
            dots, sep, stuck = 0, -1, False
            for m in _BODY_MARKS.finditer(buf, body - 1):
                q = m.start()
                if m.end() - q == 2:
                    dots += 1
                    continue
                if q + 1 + FROM_LINE_MAX > limit and not at_eof:
                    stuck = True
                    break
                if is_from_line(buf[q + 1:q + 1 + FROM_LINE_MAX]):
                    sep = q
                    break
            if stuck or (sep < 0 and not at_eof):
                break
            if sep >= 0:
                end, following = sep, sep + 1
            else:
                end, following = (size - 1 - base if buf[size - 1 - base:size - base] == b"\n" else size - base), size - base
        else:
            end, following = found
            dots = buf.count(b"\n.", body - 1, end) if _DOT_LINE.search(buf, body - 1, end) else 0
        open_line = buf[end - 1:end] != b"\n"
        mask = _flag_mask(values.get(b"status", b""), values.get(b"x-status", b""))
        keywords = _keywords(values.get(b"x-keywords", b""))
        raw = values.get(b"x-uid", b"").strip()
        uid = int(raw) if raw.isdigit() and len(raw) < 11 else 0
        block = (base + header + block_lo, base + header + block_hi) if block_lo >= 0 and contiguous else None
        crlf = buf.count(b"\r\n", body, end) if buf.find(b"\r", body, end) >= 0 else 0
        client_size = served + (end - body) + buf.count(b"\n", body, end) - crlf
        pop3_extra = (dots if end > body else 0) + 2 * (open_line and end > body)
        builder.add(pos, base + header, base + body, base + end, buf[p + 5:min(nl, p + FROM_LINE_MAX)], uid, mask,
                    keywords, block, client_size, pop3_extra)
        count += 1
        pos = base + following
    return pos, count


def scan_range(fd, start, size):
    """A Table of the messages from offset `start` (a message start) to `size`, and the first message's X-IMAPbase."""
    window = _Window(fd, start, size)
    messages = TableBuilder()
    count = 0
    imapbase = None
    if size > start and window.get(start, start + 5) != b"From ":
        raise MailboxError(not_mbox_reason(fd, size) if start == 0 else
                           f"not an mbox file: no 'From ' line at offset {start}, where a message should start")
    pos = start
    while pos < size:
        if window.base > pos or window.base + len(window.buf) - pos < QUICK_AHEAD:
            window._cover(pos, pos + CHUNK)
        pos, added = _quick(window.buf, window.base, pos, size, messages)
        count += added
        if pos >= size:
            break
        line_end = window.find(b"\n", pos, size)
        line_end = size if line_end < 0 else line_end
        from_bytes = window.get(pos + 5, min(line_end, pos + FROM_LINE_MAX))
        header = min(line_end + 1, size)
        blank = window.find(b"\n\n", header - 1, size) if header < size else -1
        is_first = not count and start == 0
        facts = _header_facts(window, header, blank + 1, is_first) if blank >= 0 else None
        found = _trusted_length(window, blank + 2, facts.content_length, size) if facts else None
        if found:
            sep = -1
        elif facts is None or facts.from_inside or facts.pieces > 1:
            sep = _separator(window, header, size if blank < 0 else blank + 2)
        else:                               # only the blank line's own newline may start a separator
            sep = blank + 1 if is_from_line(window.get(blank + 2, blank + 2 + FROM_LINE_MAX)) else -1
        if sep >= 0 or blank < 0:           # no blank line: the header runs to the next message or the end
            body = end = sep if sep >= 0 else _content_end(window, header, size)
            next_start = sep + 1 if sep >= 0 else size
            if facts is None or end != blank + 1:
                facts = _header_facts(window, header, end, is_first)
            blank_line = False
        else:
            body = blank + 2
            if found is None:
                sep = _separator(window, body, size)
                found = (sep, sep + 1) if sep >= 0 else (_content_end(window, header, size), size)
            end, next_start = found
            blank_line = end >= body
            if not blank_line:              # "headers\n\n" at the end of the file: the last newline is the trailer
                body = end
        open_line = end > header and window.get(end - 1, end) != b"\n"
        facts.finish(open_line and not blank_line, blank_line)
        uid, mask, keywords, block = facts.store_metadata()
        body_open = open_line and end > body
        client_size = (facts.served + (end - body)
                       + window.count(b"\n", body, end) - window.count(b"\r\n", body, end, _CR))
        pop3_extra = (window.count(b"\n.", body - 1, end, _DOT_LINE) if end > body else 0) + 2 * body_open
        pseudo = is_first and b"x-imap" in facts.values
        if is_first:
            raw = facts.values.get(b"x-imap" if pseudo else b"x-imapbase")
            imapbase = _parse_imapbase(raw) if raw is not None else None
        messages.add(pos, header, body, end, from_bytes, uid, mask | (PSEUDO if pseudo else 0), keywords, block,
                     client_size, pop3_extra)
        count += 1
        pos = next_start
    return messages.table(), imapbase


def uids_fit(table, uidlast):
    """Whether X-UIDs as found ascend and stay within UIDLAST (a remembered UID state still holds)."""
    previous = 0
    for i in range(len(table)):
        uid = table.uid[i]
        if not uid or table.flags[i] & PSEUDO:
            continue
        if uid <= previous or uid > uidlast:
            return False
        previous = uid
    return True
