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
    parse_from_date,
    valid_keyword,
)

CHUNK = 4 << 20
SEARCH_FOR_START = 1 << 20       # how far into a damaged file to look for its first From_ line

_FLAG_SETS = {}


def flag_set(letters):
    """The one shared frozenset for these flag letters: 100,000 messages share a handful of sets."""
    key = "".join(sorted(set(letters)))
    found = _FLAG_SETS.get(key)
    if found is None:
        found = _FLAG_SETS[key] = frozenset(key)
    return found


class Message:
    """One message's place in the file and its store metadata; immutable."""

    __slots__ = ("start", "header", "body", "end", "from_line", "uid", "flags", "keywords",
                 "block", "pseudo", "client_size", "pop3_extra")

    def __init__(self, start, header, body, end, from_line, uid, flags, keywords, block, pseudo=False,
                 client_size=0, pop3_extra=0):
        self.start = start              # offset of the "From " line
        self.header = header            # offset of the first header line
        self.body = body                # offset of the body (after the blank line); == end without one
        self.end = end                  # end of content; the separator's newline (or the end of the file) follows
        self.from_line = from_line      # "sender date", without "From " and the newline
        self.uid = uid                  # 0 until a reader assigns one
        self.flags = flags              # frozenset of SYSTEM_FLAGS letters
        self.keywords = keywords        # tuple of keyword names
        self.block = block              # (start, end) of our contiguous store-header block, or None
        self.pseudo = pseudo            # the "FOLDER INTERNAL DATA" message: kept, never shown
        self.client_size = client_size  # bytes a client is sent: served_header() + body with CRLF (RFC822.SIZE)
        self.pop3_extra = pop3_extra    # what POP3 adds: a byte per line starting with ".", a CRLF if none ends it

    @property
    def size(self):
        """Bytes of the stored message, headers and body, LF line ends."""
        return self.end - self.header

    @property
    def sender(self):
        return self.from_line.split(" ", 1)[0]

    @property
    def date(self):
        """INTERNALDATE: the From_ line's date, else the epoch."""
        return parse_from_date(self.from_line)

    def as_tuple(self):
        return (self.start, self.header, self.body, self.end, self.from_line, self.uid,
                "".join(sorted(self.flags)), self.keywords, self.block, self.pseudo,
                self.client_size, self.pop3_extra)

    @classmethod
    def from_tuple(cls, t):
        start, header, body, end, from_line, uid, flags, keywords, block, pseudo, client_size, pop3_extra = t
        return cls(start, header, body, end, from_line, uid, flag_set(flags), tuple(keywords),
                   tuple(block) if block else None, pseudo, client_size, pop3_extra)

    def moved(self, **changes):
        """A copy with some fields changed."""
        t = dict(zip(Message.__slots__, self.as_tuple()))
        t.update(changes)
        return Message.from_tuple(tuple(t[k] for k in Message.__slots__))

    def __repr__(self):
        return f"<Message uid={self.uid} at {self.start} size={self.size} flags={''.join(sorted(self.flags))}>"


class Index:
    """The result of a scan: messages in file order and the mailbox's UID state.

    `base_in_file` says whether the file itself holds the UID state
    (X-IMAPbase or X-IMAP); when it does not, the state came from the
    index cache (the first message was deleted by a mail reader) or is
    not known yet, and the next sync writes it.
    """

    def __init__(self, all_messages, uidvalidity, uidlast, keywords, size, base_in_file=True):
        self.all = all_messages                                   # including a pseudo-message
        self.messages = [m for m in all_messages if not m.pseudo]
        self.uidvalidity = uidvalidity                            # 0: none assigned yet
        self.uidlast = uidlast
        self.keywords = keywords
        self.size = size
        self.base_in_file = base_in_file

    @property
    def uidnext(self):
        last = max((m.uid for m in self.messages), default=0)
        return max(self.uidlast, last) + 1

    def by_uid(self):
        return {m.uid: m for m in self.messages if m.uid}


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
        for m in HIDDEN_LINE.finditer(data):
            name = m.group(1).lower()
            self.values.setdefault(name, b" ".join(m.group(2).split()))
            if name not in self.store_names:
                continue
            start, end = base + m.start(), base + m.end()
            if (previous_end is not None and start != previous_end) or not m.group(0).endswith(b"\n"):
                self.contiguous = False
            if self.block is None:
                self.block = [start, end]
            self.block[1] = previous_end = end
        visible = HIDDEN_LINE.sub(b"", data)
        self.served += len(visible) + visible.count(b"\n") - visible.count(b"\r\n")

    def finish(self, last_line_open, blank_line):
        """Close the served size: a CRLF for an unterminated last line, one for the blank line."""
        self.served += 2 * last_line_open + 2 * blank_line

    def store_metadata(self):
        values = self.values
        status = values.get(b"status", b"").decode("latin-1")
        xstatus = values.get(b"x-status", b"").decode("latin-1")
        flags = flag_set("".join(c for c in status if c in STATUS_LETTERS)
                         + "".join(c for c in xstatus if c in XSTATUS_LETTERS))
        keywords = tuple(k for k in values.get(b"x-keywords", b"").decode("utf-8", "replace").split()
                         if valid_keyword(k))
        raw_uid = values.get(b"x-uid", b"")
        uid = int(raw_uid) if raw_uid.isdigit() and len(raw_uid) < 11 else 0
        block = tuple(self.block) if self.block and self.contiguous else None
        return uid, flags, keywords, block

    @property
    def content_length(self):
        raw = self.values.get(b"content-length")
        return int(raw) if raw is not None and raw.isdigit() and len(raw) < 19 else None


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


def scan_range(fd, start, size):
    """Messages from offset `start` (a message start) to `size`, and the first message's X-IMAPbase."""
    window = _Window(fd, start, size)
    messages = []
    imapbase = None
    if size > start and window.get(start, start + 5) != b"From ":
        raise MailboxError(not_mbox_reason(fd, size) if start == 0 else
                           f"not an mbox file: no 'From ' line at offset {start}, where a message should start")
    pos = start
    while pos < size:
        line_end = window.find(b"\n", pos, size)
        line_end = size if line_end < 0 else line_end
        from_text = window.get(pos + 5, min(line_end, pos + FROM_LINE_MAX)).decode("utf-8", "surrogateescape")
        header = min(line_end + 1, size)
        blank = window.find(b"\n\n", header - 1, size) if header < size else -1
        is_first = not messages and start == 0
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
        uid, flags, keywords, block = facts.store_metadata()
        body_open = open_line and end > body
        client_size = (facts.served + (end - body)
                       + window.count(b"\n", body, end) - window.count(b"\r\n", body, end, _CR))
        pop3_extra = (window.count(b"\n.", body - 1, end, _DOT_LINE) if end > body else 0) + 2 * body_open
        pseudo = is_first and b"x-imap" in facts.values
        if is_first:
            raw = facts.values.get(b"x-imap" if pseudo else b"x-imapbase")
            imapbase = _parse_imapbase(raw) if raw is not None else None
        messages.append(Message(pos, header, body, end, from_text, uid, flags, keywords, block, pseudo,
                                client_size, pop3_extra))
        pos = next_start
    return messages, imapbase


def validate_uids(messages, imapbase):
    """Keep X-UIDs only while they ascend and stay within UIDLAST; later ones get new UIDs."""
    if imapbase is None:
        return [m.moved(uid=0) if m.uid else m for m in messages]
    uidlast = imapbase[1]
    out = []
    previous = 0
    broken = False
    for m in messages:
        if m.pseudo:
            out.append(m)
            continue
        if broken or not m.uid or m.uid <= previous or m.uid > uidlast:
            if m.uid:
                broken = True
            out.append(m.moved(uid=0))
        else:
            previous = m.uid
            out.append(m)
    return out


def uids_fit(messages, uidlast):
    """Whether X-UIDs as found ascend and stay within UIDLAST (a remembered UID state still holds)."""
    previous = 0
    for m in messages:
        if m.pseudo or not m.uid:
            continue
        if m.uid <= previous or m.uid > uidlast:
            return False
        previous = m.uid
    return True
