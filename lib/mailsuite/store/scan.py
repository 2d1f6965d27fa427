"""Scanning an mbox into an index of messages, in bounded memory.

The file is walked in chunks with bytes.find; only header blocks are
parsed (one regex search per message for the store's headers), and the
counts a server needs (its size on the wire, POP3's dot lines) are taken
with bytes.count while the chunk is in memory.  A 1 GiB spool is never
read into memory.
"""

import os
import re

from .format import STATUS_LETTERS, STORE_HEADERS, XSTATUS_LETTERS, MailboxError, parse_from_date, valid_keyword

CHUNK = 4 << 20
HEADER_PARSE_LIMIT = 256 << 10      # store headers further down than this are not looked for


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
                 "block", "pseudo", "client_size", "dot_lines")

    def __init__(self, start, header, body, end, from_line, uid, flags, keywords, block, pseudo=False,
                 client_size=0, dot_lines=0):
        self.start = start              # offset of the "From " line
        self.header = header            # offset of the first header line
        self.body = body                # offset of the body (after the blank line)
        self.end = end                  # end of content; the separating blank line follows
        self.from_line = from_line      # "sender date", without "From " and the newline
        self.uid = uid                  # 0 until a reader assigns one
        self.flags = flags              # frozenset of SYSTEM_FLAGS letters
        self.keywords = keywords        # tuple of keyword names
        self.block = block              # (start, end) of our contiguous store-header block, or None
        self.pseudo = pseudo            # UW IMAP's "FOLDER INTERNAL DATA" message: kept, never shown
        self.client_size = client_size  # bytes a client is sent: served_header() + body with CRLF (RFC822.SIZE)
        self.dot_lines = dot_lines      # lines starting with "." (POP3 adds one byte to each)

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
                self.client_size, self.dot_lines)

    @classmethod
    def from_tuple(cls, t):
        start, header, body, end, from_line, uid, flags, keywords, block, pseudo, client_size, dot_lines = t
        return cls(start, header, body, end, from_line, uid, flag_set(flags), tuple(keywords),
                   tuple(block) if block else None, pseudo, client_size, dot_lines)

    def __repr__(self):
        return f"<Message uid={self.uid} at {self.start} size={self.size} flags={''.join(sorted(self.flags))}>"


class Index:
    """The result of a scan: messages in file order and the mailbox's UID state."""

    def __init__(self, all_messages, uidvalidity, uidlast, keywords, size):
        self.all = all_messages                                   # including a pseudo-message
        self.messages = [m for m in all_messages if not m.pseudo]
        self.uidvalidity = uidvalidity                            # 0: none assigned yet
        self.uidlast = uidlast
        self.keywords = keywords
        self.size = size

    @property
    def uidnext(self):
        last = max((m.uid for m in self.messages), default=0)
        return max(self.uidlast, last) + 1

    def by_uid(self):
        return {m.uid: m for m in self.messages if m.uid}


class _Window:
    """A sliding window over a file descriptor, for bytes.find across chunks."""

    def __init__(self, fd, start, size):
        self.fd = fd
        self.size = size
        self.base = start
        self.buf = b""

    def _fill(self, upto, keep):
        """Make the buffer reach `upto`; before reading, let go of what lies before `keep`.

        Trimming only when a read is needed keeps both costs bounded: no
        copy of the buffer per call, and no buffer that grows with the file.
        """
        end = self.base + len(self.buf)
        if end < upto and end < self.size:
            self.drop_before(keep)
        while end < upto and end < self.size:
            chunk = os.pread(self.fd, max(CHUNK, upto - end), end)
            if not chunk:
                self.size = end
                break
            self.buf += chunk
            end += len(chunk)

    def drop_before(self, pos):
        if pos > self.base:
            self.buf = self.buf[pos - self.base:]
            self.base = pos

    def _rewind(self, pos):
        """Data before the window was dropped: start the window again at pos."""
        if pos < self.base:
            self.buf = b""
            self.base = pos

    def find(self, pattern, pos):
        """Absolute offset of pattern at or after pos, or -1."""
        self._rewind(pos)
        while True:
            i = self.buf.find(pattern, max(pos - self.base, 0))
            if i >= 0:
                return self.base + i
            end = self.base + len(self.buf)
            if end >= self.size:
                return -1
            self._fill(end + CHUNK, keep=max(pos, end - len(pattern) + 1))

    def get(self, start, end):
        self._rewind(start)
        self._fill(end, keep=start)
        return self.buf[start - self.base:end - self.base]

    def count(self, pattern, start, end, rare=None):
        """Occurrences of a pattern of at most two bytes in [start, end).

        `rare`, a compiled regex for the same pattern, is searched first:
        a regex search runs on memchr and is several times faster than
        bytes.count when the pattern is usually absent (CRs, lines that
        start with a dot).
        """
        if start >= end:
            return 0
        if start >= self.base and end <= self.base + len(self.buf):
            if rare is not None and rare.search(self.buf, start - self.base, end - self.base) is None:
                return 0
            return self.buf.count(pattern, start - self.base, end - self.base)
        total = 0
        overlap = len(pattern) - 1
        pos = start
        while pos < end:
            piece = os.pread(self.fd, min(CHUNK, end - pos) + overlap, pos)[:end - pos]
            if not piece:
                break
            total += piece.count(pattern)
            if len(piece) <= overlap or pos + len(piece) >= end:
                break
            pos += len(piece) - overlap
        return total


_CR = re.compile(rb"\r\n")
_DOT_LINE = re.compile(rb"\n\.")


def _served_header_size(block):
    """len(served_header(block)) without building it: hidden lines gone, CRLF, a final blank line."""
    visible = _HIDDEN_LINE.sub(b"", block).rstrip(b"\n")
    if not visible:
        return 2
    lines = visible.count(b"\n") + 1
    cr_ended = visible.count(b"\r\n") + visible.endswith(b"\r")
    return len(visible) - (lines - 1) - cr_ended + 2 * lines + 2


_HIDDEN_LINE = re.compile(rb"^(status|x-status|x-keywords|x-uid|x-imapbase|x-imap|content-length)[ \t]*:"
                          rb"(.*(?:\n[ \t].*)*)\n?", re.I | re.M)


def _parse_headers(data, base):
    """Store metadata from a header block: uid, flags, keywords, our block, X-IMAPbase, X-IMAP.

    Only the store's own header lines are looked at (one regex search per
    message), which is what keeps a scan close to the speed of a read.
    """
    values = {}
    block = None
    contiguous = True
    previous_end = None
    for m in _HIDDEN_LINE.finditer(data):
        name = m.group(1).lower()
        values.setdefault(name, b" ".join(m.group(2).split()))
        if name not in STORE_HEADERS:
            continue
        if previous_end is not None and m.start() != previous_end:
            contiguous = False
        if block is None:
            block = [m.start(), m.end()]
        block[1] = previous_end = m.end()
    status = values.get(b"status", b"").decode("latin-1")
    xstatus = values.get(b"x-status", b"").decode("latin-1")
    flags = flag_set("".join(c for c in status if c in STATUS_LETTERS) + "".join(c for c in xstatus if c in XSTATUS_LETTERS))
    keywords = tuple(k for k in values.get(b"x-keywords", b"").decode("utf-8", "replace").split() if valid_keyword(k))
    raw_uid = values.get(b"x-uid", b"")
    uid = int(raw_uid) if raw_uid.isdigit() and len(raw_uid) < 11 else 0
    if block is not None and (not contiguous or not data[block[1] - 1:block[1]] == b"\n"):
        block = None
    elif block is not None:
        block = (base + block[0], base + block[1])
    return uid, flags, keywords, block, values.get(b"x-imapbase"), values.get(b"x-imap")


def _parse_imapbase(value):
    parts = value.decode("utf-8", "replace").split()
    if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
        return int(parts[0]), int(parts[1]), tuple(k for k in parts[2:] if valid_keyword(k))
    return None


def scan_range(fd, start, size):
    """Messages from offset `start` (a message start) to `size`, and the first message's X-IMAPbase."""
    window = _Window(fd, start, size)
    messages = []
    imapbase = None
    if size > start and window.get(start, start + 5) != b"From ":
        raise MailboxError("not an mbox file: no 'From ' line where a message should start")
    pos = start
    while pos < size:
        line_end = window.find(b"\n", pos)
        line_end = size if line_end < 0 else line_end
        from_text = window.get(pos + 5, min(line_end, pos + 1024)).decode("utf-8", "surrogateescape")
        header = min(line_end + 1, size)
        blank = window.find(b"\n\n", header - 1) if header < size else -1
        header_block = window.get(header, min(size if blank < 0 else blank + 1, header + HEADER_PARSE_LIMIT))
        nxt = window.find(b"\n\nFrom ", blank) if blank >= 0 else -1
        if blank < 0:                       # headers run to the end of the file
            body = end = next_start = size
        elif nxt == blank:                  # the blank line after the headers is the separator
            body = end = blank + 1
            next_start = blank + 2
        elif nxt < 0:                       # the last message: drop the final separating blank line
            end = size - 1 if window.get(size - 2, size) == b"\n\n" else size
            body = min(blank + 2, end)
            next_start = size
        else:
            body, end, next_start = blank + 2, nxt + 1, nxt + 2
        uid, flags, keywords, block, base_value, pseudo_value = _parse_headers(header_block, header)
        if body - header > HEADER_PARSE_LIMIT:
            header_block = window.get(header, body)
        client_size = (_served_header_size(header_block) + (end - body)
                       + window.count(b"\n", body, end) - window.count(b"\r\n", body, end, _CR))
        dot_lines = window.count(b"\n.", body - 1, end, _DOT_LINE) if body > header else 0
        is_first = not messages and start == 0
        pseudo = is_first and pseudo_value is not None
        if is_first:
            raw = pseudo_value if pseudo else base_value
            imapbase = _parse_imapbase(raw) if raw is not None else None
        messages.append(Message(pos, header, body, end, from_text, uid, flags, keywords, block, pseudo,
                                client_size, dot_lines))
        pos = next_start
    return messages, imapbase


def validate_uids(messages, imapbase):
    """Keep X-UIDs only while they ascend and stay within UIDLAST; later ones get new UIDs."""
    if imapbase is None:
        return [_with(m, uid=0) if m.uid else m for m in messages]
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
            out.append(_with(m, uid=0))
        else:
            previous = m.uid
            out.append(m)
    return out


def _with(m, **changes):
    t = dict(zip(Message.__slots__, m.as_tuple()))
    t.update(changes)
    return Message.from_tuple(tuple(t[k] for k in Message.__slots__))
