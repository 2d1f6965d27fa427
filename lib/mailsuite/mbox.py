"""The mbox store: scan, append and rewrite a mailbox file in place.

Every reader and writer in mailsuite goes through `Mailbox`, so the rules of
the format live here once:

* A message starts with a `From SENDER DATE` line at the start of the file
  or after a blank line, and ends with a separating blank line.  Body lines
  matching `^>*From ` get one more `>` on write (mboxrd); what is stored is
  what is served.
* Flags and UIDs live in headers, as Dovecot and UW IMAP keep them:
  `Status:` (R, O), `X-Status:` (A, F, T, D), `X-Keywords:`, `X-UID:`, and
  `X-IMAPbase: UIDVALIDITY UIDLAST KEYWORDS...` in the first message.  We
  write them as one block at the end of the header, padded with spaces in
  `X-Keywords:`, so a flag change or a new UID is one in-place write.
* UIDs are assigned by readers (`sync`) under the lock, always to messages
  at the end of the file, so they only ever ascend.
* Rewrites happen in place, under both locks, never by renaming a new file
  over the spool.  A rewrite that does not fit in the padding writes the new
  tail of the file to a journal first; the next process to take the lock
  rolls an interrupted copy forward.
* A failed append truncates the file back to its old size.

Scanning never reads the whole file into memory: it walks the file in
chunks with bytes.find, parses only header blocks, and an index cache
(`index.py`) lets a re-scan read only what was appended.
"""

import errno
import io
import os
import re
import stat
import time
from contextlib import contextmanager

from .index import IndexCache
from .locking import mailbox_lock

CHUNK = 4 << 20
HEADER_PARSE_LIMIT = 256 << 10      # store headers further down than this are not looked for
JOURNAL_MAGIC = b"MAILSUITE-JOURNAL-1"

SYSTEM_FLAGS = "ROAFTD"             # R \Seen, O not \Recent, A \Answered, F \Flagged, T \Draft, D \Deleted
STATUS_LETTERS = "RO"
XSTATUS_LETTERS = "AFTD"
# Headers that belong to the store.  Content-Length is stripped on delivery
# but left alone in stored messages: rewrites never change a body.
STORE_HEADERS = {b"status", b"x-status", b"x-keywords", b"x-uid", b"x-imapbase"}
STRIP_ON_DELIVERY = STORE_HEADERS | {b"x-imap", b"content-length"}

_FROM_QUOTE = re.compile(rb"^(>*From )", re.M)
_KEYWORD = re.compile(r"[^\x00-\x20\x7f(){%*\"\\\]]+")


class MailboxError(Exception):
    """The file is not something we may treat as a mailbox (symlink, foreign owner, not mbox)."""


class Message:
    """One message's place in the file and its store metadata; immutable."""

    __slots__ = ("start", "header", "body", "end", "from_line", "uid", "flags", "keywords",
                 "block", "pseudo")

    def __init__(self, start, header, body, end, from_line, uid, flags, keywords, block, pseudo=False):
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
                "".join(sorted(self.flags)), self.keywords, self.block, self.pseudo)

    @classmethod
    def from_tuple(cls, t):
        start, header, body, end, from_line, uid, flags, keywords, block, pseudo = t
        return cls(start, header, body, end, from_line, uid, frozenset(flags), tuple(keywords),
                   tuple(block) if block else None, pseudo)

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


# --- From_ lines -----------------------------------------------------------

def from_line(sender, when=None):
    """`From SENDER DATE`, asctime format in UTC, as Postfix and mail.local write it."""
    sender = re.sub(r"[\s\x00-\x1f\x7f]", "_", sender or "MAILER-DAEMON")
    t = time.gmtime(None if when is None else when.timestamp())
    return (f"{sender} {_DAYS[t.tm_wday]} {_MONTH_NAMES[t.tm_mon - 1]} {t.tm_mday:2d} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} {t.tm_year}")


_FROM_DATE = re.compile(r"(\w{3}) +(\w{3}) +(\d{1,2}) +(\d{1,2}):(\d{2})(?::(\d{2}))? +(?:([A-Z]{3,4}|[+-]\d{4}) +)?(\d{4})")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTHS = {m: i for i, m in enumerate(_MONTH_NAMES, 1)}


def parse_from_date(line):
    """A datetime in UTC from a From_ line's date, else the epoch."""
    from datetime import datetime, timezone
    m = _FROM_DATE.search(line)
    if m and m.group(2) in _MONTHS:
        try:
            return datetime(int(m.group(8)), _MONTHS[m.group(2)], int(m.group(3)), int(m.group(4)),
                            int(m.group(5)), int(m.group(6) or 0), tzinfo=timezone.utc)
        except ValueError:
            pass
    return datetime.fromtimestamp(0, timezone.utc)


def quote_from_lines(data):
    """mboxrd: one more '>' on every line matching ^>*From ."""
    return _FROM_QUOTE.sub(rb">\1", data)


def unquote_from_lines(data):
    """The inverse of quote_from_lines, for readers that want the original body."""
    return re.sub(rb"(?m)^>(>*From )", rb"\1", data)


# --- the store block -------------------------------------------------------

def render_block(*, flags, keywords, uid, imapbase=None, pseudo=False, pad_to=0, padding=0):
    """Our store headers, padded in X-Keywords: to pad_to bytes (or `padding` spare bytes)."""
    lines = []
    if imapbase is not None:
        uidvalidity, uidlast, base_keywords = imapbase
        name = "X-IMAP" if pseudo else "X-IMAPbase"
        lines.append(f"{name}: {uidvalidity} {uidlast:010d}" + "".join(" " + k for k in base_keywords))
    status = "".join(c for c in STATUS_LETTERS if c in flags)
    xstatus = "".join(c for c in XSTATUS_LETTERS if c in flags)
    if status:
        lines.append(f"Status: {status}")
    if xstatus:
        lines.append(f"X-Status: {xstatus}")
    keyword_line = "X-Keywords:" + "".join(" " + k for k in keywords)
    tail = [f"X-UID: {uid}"] if uid else []
    fixed = sum(len(l) + 1 for l in lines + tail) + len(keyword_line) + 1
    spare = max(pad_to - fixed, 0) if pad_to else padding
    lines.append(keyword_line + " " * spare)
    return ("\n".join(lines + tail) + "\n").encode("utf-8")


def valid_keyword(word):
    return bool(_KEYWORD.fullmatch(word)) and not word.startswith("\\")


# --- scanning ----------------------------------------------------------------

class _Window:
    """A sliding window over a file descriptor, for bytes.find across chunks."""

    def __init__(self, fd, start, size):
        self.fd = fd
        self.size = size
        self.base = start
        self.buf = b""

    def _fill(self, upto):
        end = self.base + len(self.buf)
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
            # Only now, before reading more, let go of what lies behind: a
            # slice per call would copy the whole buffer for every message.
            self.drop_before(max(pos, end - len(pattern) + 1))
            self._fill(self.base + len(self.buf) + CHUNK)

    def get(self, start, end):
        self._rewind(start)
        self._fill(end)
        return self.buf[start - self.base:end - self.base]


_STORE_LINE = re.compile(rb"^(status|x-status|x-keywords|x-uid|x-imapbase|x-imap)[ \t]*:(.*(?:\n[ \t].*)*)\n?",
                         re.I | re.M)


def _parse_headers(data, base):
    """Store metadata from a header block: uid, flags, keywords, our block, X-IMAPbase, X-IMAP.

    Only the store's own header lines are looked at (one regex search per
    message), which is what keeps a scan close to the speed of a read.
    """
    values = {}
    block = None
    contiguous = True
    previous_end = None
    for m in _STORE_LINE.finditer(data):
        name = m.group(1).lower()
        values.setdefault(name, b" ".join(m.group(2).split()))
        if name == b"x-imap":
            continue
        if previous_end is not None and m.start() != previous_end:
            contiguous = False
        if block is None:
            block = [m.start(), m.end()]
        block[1] = previous_end = m.end()
    status = values.get(b"status", b"").decode("latin-1")
    xstatus = values.get(b"x-status", b"").decode("latin-1")
    flags = frozenset(c for c in status if c in STATUS_LETTERS) | frozenset(c for c in xstatus if c in XSTATUS_LETTERS)
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
        is_first = not messages and start == 0
        pseudo = is_first and pseudo_value is not None
        if is_first:
            raw = pseudo_value if pseudo else base_value
            imapbase = _parse_imapbase(raw) if raw is not None else None
        messages.append(Message(pos, header, body, end, from_text, uid, flags, keywords, block, pseudo))
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


# --- the mailbox ---------------------------------------------------------------

class Mailbox:
    """One mbox file.  Hold `locked()` for anything that writes."""

    def __init__(self, path, cfg, *, owner=None, fd=None, check_owner=True):
        self.path = path
        self.cfg = cfg
        self.owner = owner
        self.fd = fd
        self._lock = None
        self._lock_depth = 0
        self._check_owner = check_owner
        self.cache = self._open_cache()
        if self.fd is None:
            self._open()

    # -- opening and checks --

    def _open(self):
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            self.fd = None
            return
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise MailboxError(f"{self.path}: is a symbolic link; refusing it") from None
            raise
        try:
            self.verify()
        except MailboxError:
            os.close(self.fd)
            self.fd = None
            raise

    def verify(self):
        """Refuse anything that is not a plain, singly-linked file of the owner's."""
        st = os.fstat(self.fd)
        try:
            lst = os.lstat(self.path)
        except FileNotFoundError:
            raise MailboxError(f"{self.path}: vanished while opening") from None
        if stat.S_ISLNK(lst.st_mode) or (lst.st_dev, lst.st_ino) != (st.st_dev, st.st_ino):
            raise MailboxError(f"{self.path}: was replaced while opening; refusing it")
        if not stat.S_ISREG(st.st_mode):
            raise MailboxError(f"{self.path}: not a regular file; refusing it")
        if st.st_nlink != 1:
            raise MailboxError(f"{self.path}: has {st.st_nlink} links; refusing it")
        if self._check_owner and self.owner is not None and st.st_uid != self.owner.uid:
            raise MailboxError(f"{self.path}: owned by uid {st.st_uid}, not {self.owner.name}; refusing it")

    def create(self, mode=0o600, uid=None, gid=None):
        """Create the file if missing (O_EXCL, never through a symlink)."""
        if self.fd is not None:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        except FileExistsError:
            self._open()
            return
        if uid is not None and os.geteuid() == 0:
            os.fchown(fd, uid, -1 if gid is None else gid)
        os.fchmod(fd, mode)
        self.fd = fd

    @property
    def exists(self):
        return self.fd is not None

    def close(self):
        if self.fd is not None and not self._lock_depth:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- locking and recovery --

    @contextmanager
    def locked(self, timeout=None):
        """Both locks, re-entrant within the process; an interrupted rewrite is finished first."""
        if self.fd is None or self._lock_depth:
            self._lock_depth += 1
            try:
                yield self._lock
            finally:
                self._lock_depth -= 1
            return
        with mailbox_lock(self.path, self.fd, self.cfg, timeout=timeout) as lock:
            self._lock = lock
            self._lock_depth = 1
            try:
                self.verify()
                self._roll_forward()
                yield lock
            finally:
                self._lock_depth = 0
                self._lock = None

    def _journal_paths(self, kind="journal"):
        """Where a journal may live: beside the mailbox, else (unwritable spool dir) in the owner's home."""
        directory, name = os.path.split(self.path)
        paths = [os.path.join(directory or ".", f".{name}.{kind}")]
        if self.owner is not None:
            paths.append(os.path.join(self.owner.home, ".mailsuite", f"{name}.{kind}"))
        return paths

    def _roll_forward(self):
        """Finish what a killed process left: undo a partial append, redo an interrupted rewrite."""
        for kind, apply in (("append", self._undo_append), ("journal", self._apply_journal)):
            for path in self._journal_paths(kind):
                try:
                    jfd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
                except OSError:
                    continue
                try:
                    apply(jfd)
                finally:
                    os.close(jfd)
                os.unlink(path)
                _fsync_dir(os.path.dirname(path))

    def _undo_append(self, jfd):
        """An append record names the size before and after; a file in between holds half a message."""
        fields = os.read(jfd, 256).split()
        if len(fields) != 5 or fields[0] != b"APPEND":
            return
        dev, ino, before, after = (int(f) for f in fields[1:])
        st = os.fstat(self.fd)
        if (st.st_dev, st.st_ino) == (dev, ino) and before <= st.st_size < after:
            os.ftruncate(self.fd, before)
            os.fsync(self.fd)

    def _apply_journal(self, jfd):
        size = os.fstat(jfd).st_size
        trailer_len = 128
        if size < trailer_len:
            return
        trailer = os.pread(jfd, trailer_len, size - trailer_len)
        fields = trailer.rstrip(b" \n").split()
        if len(fields) != 5 or fields[0] != JOURNAL_MAGIC:
            return                                          # the journal itself was not finished: discard it
        dev, ino, offset, length = (int(f) for f in fields[1:])
        st = os.fstat(self.fd)
        if (st.st_dev, st.st_ino) != (dev, ino) or length != size - trailer_len:
            return
        _copy_range(jfd, 0, self.fd, offset, length)
        os.ftruncate(self.fd, offset + length)
        os.fsync(self.fd)

    def touch_lock(self):
        if self._lock is not None:
            self._lock.touch()

    # -- cache --

    def _open_cache(self):
        template = self.cfg.mailsuite.index_dir
        if not template or self.owner is None:
            return None
        return IndexCache(self.cfg.expand_user_path(template, self.owner.home))

    # -- reading --

    def scan(self):
        """The index of the whole file; only the appended tail is parsed when the cache is current."""
        if self.fd is None:
            return Index([], 0, 0, (), 0)
        st = os.fstat(self.fd)
        cached = self.cache.load(self.path) if self.cache else None
        messages, imapbase = None, None
        hit = False
        if cached:
            key, tail_sig, payload = cached
            if key[:2] == (st.st_dev, st.st_ino):
                old_size = key[2]
                if key == (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns):
                    messages, imapbase = payload
                    hit = True
                elif st.st_size > old_size and self._tail_signature(old_size) == tail_sig and payload[0]:
                    old_messages, imapbase = payload
                    last = old_messages[-1]
                    tail, _ = scan_range(self.fd, last.start, st.st_size)
                    messages = old_messages[:-1] + tail
        if messages is None:
            messages, imapbase = scan_range(self.fd, 0, st.st_size)
        messages = validate_uids(messages, imapbase)
        if self.cache and not hit:
            self.cache.store(self.path, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns),
                             self._tail_signature(st.st_size), (messages, imapbase))
        uidvalidity, uidlast, keywords = imapbase or (0, 0, ())
        return Index(messages, uidvalidity, uidlast, keywords, st.st_size)

    def _tail_signature(self, size):
        return os.pread(self.fd, 64, max(size - 64, 0)) if self.fd is not None else b""

    def read(self, msg, start=None, end=None):
        """Bytes of a stored message (from its first header to its end), or a slice of them."""
        lo = msg.header if start is None else start
        hi = msg.end if end is None else end
        return _pread_all(self.fd, hi - lo, lo)

    def open_range(self, msg, start=None, end=None):
        """A buffered binary file over a message (or a slice), for streaming big ones."""
        lo = msg.header if start is None else start
        hi = msg.end if end is None else end
        return io.BufferedReader(_RangeReader(self.fd, lo, hi), buffer_size=1 << 16)

    # -- writing --

    def append(self, source, *, sender, date=None, flags=frozenset(), keywords=(), extra_headers=(),
               assign_uid=False):
        """Append one message; returns its UID (0 unless assign_uid).  Caller holds locked().

        With assign_uid (IMAP APPEND, COPY) every earlier message gets its UID
        first, so UIDs keep ascending, and UIDLAST is raised before the
        message is written: a failed append leaves a harmless gap, never a
        UID given twice.
        """
        self._require_lock()
        index = self.sync() if assign_uid else None
        uid = index.uidnext if index else 0
        keywords = tuple(k for k in keywords if valid_keyword(k))
        if uid and index.all:
            base_keywords = index.keywords + tuple(k for k in keywords if k not in index.keywords)
            self._rewrite(index, {}, (), (index.uidvalidity, uid, base_keywords))
        prepared = _prepared(source)
        old_size = os.fstat(self.fd).st_size
        prefix = _separator_needed(self.fd, old_size)
        first_of_file = index is not None and not index.all
        imapbase = (index.uidvalidity or _new_uidvalidity(), uid, keywords) if first_of_file else None
        block = render_block(flags=flags, keywords=keywords, uid=uid, imapbase=imapbase,
                             padding=self.cfg.delivery.header_padding)
        head = b"".join([prefix, b"From ", from_line(sender, date).encode(), b"\n",
                         *extra_headers, prepared.header_bytes, block, b"\n"])
        writer = _Writer(self.fd, old_size)
        record = self._record_append(old_size, len(head) + prepared.body_size + 1)
        try:
            writer.write(head)
            last = b"\n"
            for chunk in prepared.body_chunks():
                if chunk:
                    writer.write(chunk)
                    last = chunk[-1:]
            writer.write(b"\n" if last == b"\n" else b"\n\n")
            os.fsync(self.fd)
        except BaseException:
            _truncate_back(self.fd, old_size)
            raise
        finally:
            _unlink_quietly(record)
            if prepared is not source:
                prepared.close()
        return uid

    def sync(self, flags=None, expunge=(), keywords=None):
        """Assign missing UIDs, apply flag changes, drop expunged messages; returns the new index.

        `flags` maps uid -> (flags, keywords); `expunge` holds uids; `keywords`
        adds names to the mailbox's keyword list.  Caller holds locked().
        Messages appended by others since the caller's last scan are kept as
        they are, and get their UIDs here.
        """
        self._require_lock()
        index = self.scan()
        if not index.all:
            return index
        flags = flags or {}
        expunge = set(expunge)
        next_uid = index.uidnext
        base_keywords = list(index.keywords)
        changes = {}
        for m in index.messages:
            uid = m.uid
            if not uid:
                uid, next_uid = next_uid, next_uid + 1
            new_flags, new_keywords = flags.get(m.uid, (m.flags, m.keywords)) if m.uid else (m.flags, m.keywords)
            new_flags = frozenset(c for c in new_flags if c in SYSTEM_FLAGS)
            new_keywords = tuple(k for k in new_keywords if valid_keyword(k))
            base_keywords += [k for k in new_keywords if k not in base_keywords]
            if (uid, new_flags, new_keywords) != (m.uid, m.flags, m.keywords):
                changes[m.start] = (new_flags, new_keywords, uid)
        base_keywords += [k for k in keywords or () if valid_keyword(k) and k not in base_keywords]
        imapbase = (index.uidvalidity or _new_uidvalidity(), max(next_uid - 1, index.uidlast), tuple(base_keywords))
        drop = {m.start for m in index.messages if m.uid and m.uid in expunge}
        if not changes and not drop and (index.uidvalidity, index.uidlast, index.keywords) == imapbase:
            return index
        return self._rewrite(index, changes, drop, imapbase)

    def _require_lock(self):
        if not self._lock_depth:
            raise RuntimeError("mailbox must be locked for writing")
        if self.fd is None:
            raise MailboxError(f"{self.path}: does not exist")

    def _rewrite(self, index, changes, expunge, imapbase):
        """Apply store-header changes: in place where they fit, else journal the rest of the file.

        `changes` maps a message's offset to (flags, keywords, uid); `expunge`
        holds offsets to drop; the first surviving message carries imapbase.
        """
        survivors = [m for m in index.all if m.start not in expunge]
        wanted = {}
        for position, m in enumerate(survivors):
            base = imapbase if position == 0 else None
            change = changes.get(m.start)
            if change is None and base is None and m is not index.all[0]:
                continue
            new_flags, new_keywords, uid = change or (m.flags, m.keywords, m.uid)
            wanted[m.start] = (new_flags, new_keywords, uid, base)
        tail_from = min(expunge, default=None)
        in_place = []
        for m in survivors:
            if tail_from is not None and m.start >= tail_from:
                break
            plan = wanted.get(m.start)
            if plan is None:
                continue
            block = None
            if m.block:
                new_flags, new_keywords, uid, base = plan
                block = render_block(flags=new_flags, keywords=new_keywords, uid=uid, imapbase=base,
                                     pseudo=m.pseudo, pad_to=m.block[1] - m.block[0])
            if block is None or len(block) != m.block[1] - m.block[0]:
                tail_from = m.start
                break
            in_place.append((m.block[0], block))
        for offset, block in in_place:
            _pwrite_all(self.fd, block, offset)
        if tail_from is not None:
            self._rewrite_tail(tail_from, survivors, wanted)
        _mark_modified(self.fd)
        os.fsync(self.fd)
        return self._index_after_rewrite(survivors, wanted, tail_from, imapbase)

    def _index_after_rewrite(self, survivors, wanted, tail_from, imapbase):
        """The new index without re-reading the file: re-parse only what was written."""
        messages = []
        for m in survivors:
            if tail_from is not None and m.start >= tail_from:
                break
            if m.start in wanted:
                uid, flags, keywords, block, _, _ = _parse_headers(self.read(m, m.header, m.body), m.header)
                m = Message(m.start, m.header, m.body, m.end, m.from_line, uid, flags, keywords, block, m.pseudo)
            messages.append(m)
        st = os.fstat(self.fd)
        if tail_from is not None:
            tail, _ = scan_range(self.fd, tail_from, st.st_size)
            messages += tail
        if not messages:
            imapbase = None
        messages = validate_uids(messages, imapbase)
        if self.cache:
            self.cache.store(self.path, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns),
                             self._tail_signature(st.st_size), (messages, imapbase))
        uidvalidity, uidlast, keywords = imapbase or (0, 0, ())
        return Index(messages, uidvalidity, uidlast, keywords, st.st_size)

    def _rewrite_tail(self, tail_from, survivors, wanted):
        """Write the new tail to a journal, then copy it over the file from tail_from on."""
        journal_path, jfd = self._create_journal()
        try:
            writer = _Writer(jfd, 0)
            separator = b""
            for m in survivors:
                if m.start < tail_from:
                    continue
                plan = wanted.get(m.start)
                writer.write(separator)
                _copy_into(self.fd, m.start, m.header - m.start, writer)
                if plan is None:
                    _copy_into(self.fd, m.header, m.end - m.header, writer)
                else:
                    new_flags, new_keywords, uid, base = plan
                    header = self.read(m, m.header, m.body)
                    writer.write(_without_store_headers(header))
                    writer.write(render_block(flags=new_flags, keywords=new_keywords, uid=uid, imapbase=base,
                                              pseudo=m.pseudo, padding=self.cfg.delivery.header_padding))
                    writer.write(b"\n")
                    _copy_into(self.fd, m.body, m.end - m.body, writer)
                separator = b"\n"
                self.touch_lock()
            if separator:
                writer.write(b"\n")
            length = writer.offset
            st = os.fstat(self.fd)
            trailer = b"%s %d %d %d %d" % (JOURNAL_MAGIC, st.st_dev, st.st_ino, tail_from, length)
            os.fsync(jfd)
            _pwrite_all(jfd, trailer.ljust(127) + b"\n", length)
            os.fsync(jfd)
            _fsync_dir(os.path.dirname(journal_path))
            _copy_range(jfd, 0, self.fd, tail_from, length)
            os.ftruncate(self.fd, tail_from + length)
            os.fsync(self.fd)
        finally:
            os.close(jfd)
        os.unlink(journal_path)
        _fsync_dir(os.path.dirname(journal_path))

    def _record_append(self, before, length):
        """Note the append about to happen, so a SIGKILLed append is cut back by the next locker.

        Not fsynced: it guards against a killed process, whose page cache
        survives; the append itself is fsynced before anyone is told "done".
        """
        path, fd = self._create_journal("append")
        try:
            st = os.fstat(self.fd)
            os.write(fd, b"APPEND %d %d %d %d\n" % (st.st_dev, st.st_ino, before, before + length))
        finally:
            os.close(fd)
        return path

    def _create_journal(self, kind="journal"):
        errors = []
        for path in self._journal_paths(kind):
            directory = os.path.dirname(path)
            try:
                if directory != os.path.dirname(self.path):
                    os.makedirs(directory, mode=0o700, exist_ok=True)
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                return path, os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                errors.append(f"{path}: {exc.strerror}")
        raise OSError(errno.EACCES, "cannot create a journal: " + "; ".join(errors))


def _without_store_headers(header):
    """A header block (with or without its blank line) minus our store headers, ending in one newline."""
    out = []
    skipping = False
    for line in header.rstrip(b"\n").split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                out.append(line)
            continue
        skipping = line.split(b":", 1)[0].strip().lower() in STORE_HEADERS
        if not skipping:
            out.append(line)
    return b"".join(line + b"\n" for line in out)


def _prepared(source):
    """A PreparedMessage from one, or from the raw bytes of a message (IMAP APPEND)."""
    if hasattr(source, "header_bytes"):
        return source
    from .deliver import prepare_bytes
    return prepare_bytes(source)


def _separator_needed(fd, size):
    """What to write before a new From_ line so that a blank line precedes it."""
    if size == 0:
        return b""
    tail = os.pread(fd, 2, max(size - 2, 0))
    if tail == b"\n\n":
        return b""
    return b"\n" if tail.endswith(b"\n") else b"\n\n"


def _mark_modified(fd):
    """Give an in-place rewrite a precise mtime, so other readers' caches see the change."""
    st = os.fstat(fd)
    os.utime(fd, ns=(st.st_atime_ns, max(time.time_ns(), st.st_mtime_ns + 1)))


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _new_uidvalidity():
    return int(time.time())


class _Writer:
    """Sequential pwrite()s from an offset; short writes retried."""

    def __init__(self, fd, offset):
        self.fd = fd
        self.offset = offset

    def write(self, data):
        _pwrite_all(self.fd, data, self.offset)
        self.offset += len(data)


class _RangeReader(io.RawIOBase):
    def __init__(self, fd, start, end):
        self.fd = fd
        self.pos = start
        self.end = end

    def readable(self):
        return True

    def readinto(self, buffer):
        n = min(len(buffer), self.end - self.pos)
        if n <= 0:
            return 0
        data = os.pread(self.fd, n, self.pos)
        buffer[:len(data)] = data
        self.pos += len(data)
        return len(data)


def _pwrite_all(fd, data, offset):
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def _pread_all(fd, length, offset):
    parts = []
    while length > 0:
        chunk = os.pread(fd, min(length, CHUNK), offset)
        if not chunk:
            break
        parts.append(chunk)
        offset += len(chunk)
        length -= len(chunk)
    return b"".join(parts)


def _copy_into(fd, offset, length, writer):
    while length > 0:
        chunk = os.pread(fd, min(length, CHUNK), offset)
        if not chunk:
            raise MailboxError("mailbox shrank while being rewritten")
        writer.write(chunk)
        offset += len(chunk)
        length -= len(chunk)


def _copy_range(src, src_offset, dst, dst_offset, length):
    while length > 0:
        chunk = os.pread(src, min(length, CHUNK), src_offset)
        if not chunk:
            raise MailboxError("journal shorter than it says")
        _pwrite_all(dst, chunk, dst_offset)
        src_offset += len(chunk)
        dst_offset += len(chunk)
        length -= len(chunk)


def _fsync_dir(path):
    try:
        fd = os.open(path or ".", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _truncate_back(fd, size):
    """Undo a partial append: the spool never keeps half a message."""
    os.ftruncate(fd, size)
    try:
        os.fsync(fd)
    except OSError:
        pass
