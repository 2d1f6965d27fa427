"""A mailbox's messages as fixed-size columns, not a Python object per message.

A 100,000-message mailbox is 100,000 rows; as Python objects that was
some 800 bytes a row, and a session's memory grew with the mailbox.  A
`Table` keeps each field in one typed column (`array`, or a `memoryview`
straight over the index file, shared by every process that maps it): 87
bytes a row plus the From_ line, and bulk work (counting unseen messages,
summing sizes, finding a UID) runs in C.  What varies in length is kept
apart: the From_ lines in one byte string, the keyword sets in a short
list that rows refer to by number (a mailbox has few distinct ones).

A `Message` is made only when one row is asked for, and is dropped with
its caller.  `Index` is a scan's result: a table, the mailbox's UID state,
and how many leading rows have UIDs that can be trusted.
"""

import array
import bisect

from .format import parse_from_date

FLAG_BITS = {"R": 1, "O": 2, "A": 4, "F": 8, "T": 16, "D": 32}
PSEUDO = 64                       # the "FOLDER INTERNAL DATA" message
LETTERS = tuple(frozenset(c for c, bit in FLAG_BITS.items() if mask & bit) for mask in range(64))

# flag bits -> 1 where a letter's bit is clear (WITHOUT) or set (WITH): counting and finding in C
WITHOUT = {c: bytes(0 if mask & bit else 1 for mask in range(256)) for c, bit in FLAG_BITS.items()}
WITH = {c: bytes(1 if mask & bit else 0 for mask in range(256)) for c, bit in FLAG_BITS.items()}

WIDE = ("start", "header", "body", "end", "uid", "block_lo", "block_hi", "client_size", "pop3_extra", "from_at")
NARROW = (("flags", "B"), ("kw", "I"), ("from_len", "H"))
COLUMNS = tuple((name, "q") for name in WIDE) + NARROW
ROW_BYTES = sum(array.array(code).itemsize for _, code in COLUMNS)


def mask_of(letters):
    """The flag bits of a set of SYSTEM_FLAGS letters."""
    mask = 0
    for c in letters:
        mask |= FLAG_BITS.get(c, 0)
    return mask


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

    def __repr__(self):
        return f"<Message uid={self.uid} at {self.start} size={self.size} flags={''.join(sorted(self.flags))}>"


class Table:
    """Rows of messages in file order, one typed column per field; a read-only sequence of Messages."""

    __slots__ = tuple(name for name, _ in COLUMNS) + ("blob", "keyword_sets", "_count")

    def __init__(self, columns, blob, keyword_sets):
        for name, _ in COLUMNS:
            setattr(self, name, columns[name])
        self.blob = blob                       # the From_ lines, as stored (from_at, from_len point into it)
        self.keyword_sets = keyword_sets       # tuple of keyword tuples; row's kw indexes it, 0 is ()
        self._count = len(self.start)

    @classmethod
    def empty(cls):
        return TableBuilder().table()

    def __len__(self):
        return self._count

    def __bool__(self):
        return self._count > 0

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self.message(j) for j in range(*i.indices(self._count))]
        if i < 0:
            i += self._count
        if not 0 <= i < self._count:
            raise IndexError("message row out of range")
        return self.message(i)

    def __iter__(self):
        return (self.message(i) for i in range(self._count))

    # -- one row --

    def from_bytes(self, i):
        at = self.from_at[i]
        return bytes(self.blob[at:at + self.from_len[i]])

    def from_line(self, i):
        return self.from_bytes(i).decode("utf-8", "surrogateescape")

    def letters(self, i):
        return LETTERS[self.flags[i] & 63]

    def keywords(self, i):
        return self.keyword_sets[self.kw[i]]

    def is_pseudo(self, i):
        return bool(self.flags[i] & PSEUDO)

    def block(self, i):
        lo = self.block_lo[i]
        return (lo, self.block_hi[i]) if lo >= 0 else None

    def message(self, i, uid=None):
        """Row I as a Message (with UID instead of the stored one, when given)."""
        return Message(self.start[i], self.header[i], self.body[i], self.end[i], self.from_line(i),
                       self.uid[i] if uid is None else uid, self.letters(i), self.keywords(i), self.block(i),
                       self.is_pseudo(i), self.client_size[i], self.pop3_extra[i])

    def row_of_start(self, offset):
        """The row whose message starts at OFFSET (rows ascend by offset), or -1."""
        i = bisect.bisect_left(self.start, offset)
        return i if i < self._count and self.start[i] == offset else -1

    # -- new tables --

    def changed(self, changes):
        """A copy with rows changed: CHANGES maps a row to (letters, keywords, uid).

        Only the three columns that change are copied; the others stay
        shared with this table (and with the index file under it).
        """
        flags, kw, uid = _copy(self.flags, "B"), _copy(self.kw, "I"), _copy(self.uid, "q")
        sets = list(self.keyword_sets)
        numbers = {k: n for n, k in enumerate(sets)}
        for i, (letters, keywords, new_uid) in changes.items():
            keywords = tuple(keywords)
            n = numbers.get(keywords)
            if n is None:
                n = numbers[keywords] = len(sets)
                sets.append(keywords)
            flags[i] = (flags[i] & PSEUDO) | mask_of(letters)
            kw[i] = n
            uid[i] = new_uid
        columns = {name: getattr(self, name) for name, _ in COLUMNS}
        columns.update(flags=flags, kw=kw, uid=uid)
        return Table(columns, self.blob, tuple(sets))


def _copy(column, code):
    copy = array.array(code)
    copy.frombytes(_raw(column))
    return copy


def _raw(column, lo=0, hi=None):
    """A column's bytes (of rows [lo, hi)), for a copy at C speed (an array, or a memoryview over an index file)."""
    return memoryview(column)[lo:hi].cast("B")


class TableBuilder:
    """Rows appended one at a time (by the scanner) or a table at a time; `table()` when done."""

    def __init__(self):
        self.columns = {name: array.array(code) for name, code in COLUMNS}
        self.blob = bytearray()
        self.sets = [()]
        self._numbers = {(): 0}
        c = self.columns
        self._appenders = tuple(c[name].append for name in ("start", "header", "body", "end", "uid", "block_lo",
                                                              "block_hi", "client_size", "pop3_extra", "from_at",
                                                              "from_len", "flags", "kw"))

    def add(self, start, header, body, end, from_bytes, uid, mask, keywords, block, client_size, pop3_extra):
        (a_start, a_header, a_body, a_end, a_uid, a_lo, a_hi, a_size, a_extra, a_at, a_len, a_flags,
         a_kw) = self._appenders
        a_start(start)
        a_header(header)
        a_body(body)
        a_end(end)
        a_uid(uid)
        a_lo(block[0] if block else -1)
        a_hi(block[1] if block else -1)
        a_size(client_size)
        a_extra(pop3_extra)
        a_at(len(self.blob))
        a_len(len(from_bytes))
        self.blob += from_bytes
        a_flags(mask)
        a_kw(self._numbers[keywords] if keywords in self._numbers else self.keyword_set(keywords))

    def keyword_set(self, keywords):
        n = self._numbers.get(keywords)
        if n is None:
            n = self._numbers[keywords] = len(self.sets)
            self.sets.append(keywords)
        return n

    def extend(self, table, lo=0, hi=None):
        """Append rows [lo, hi) of TABLE (their From_ lines copied, their keyword sets renumbered)."""
        hi = len(table) if hi is None else hi
        if lo >= hi:
            return
        c = self.columns
        for name in ("start", "header", "body", "end", "uid", "block_lo", "block_hi", "client_size", "pop3_extra",
                     "flags", "from_len"):
            c[name].frombytes(_raw(getattr(table, name), lo, hi))
        base = len(self.blob)
        first = table.from_at[lo]               # a table's From_ lines lie end to end in its blob
        self.blob += table.blob[first:table.from_at[hi - 1] + table.from_len[hi - 1]]
        if first == base:
            c["from_at"].frombytes(_raw(table.from_at, lo, hi))
        else:
            c["from_at"].extend(at - first + base for at in table.from_at[lo:hi])
        numbers = [self.keyword_set(tuple(k)) for k in table.keyword_sets]
        if numbers == list(range(len(numbers))):
            c["kw"].frombytes(_raw(table.kw, lo, hi))
        else:
            c["kw"].extend(numbers[n] for n in table.kw[lo:hi])

    def table(self):
        return Table(self.columns, self.blob, tuple(self.sets))


class MessageList:
    """The messages of a table from a given row on, each a Message made when asked for.

    Rows past `valid` are shown with UID 0: their X-UIDs could not be
    trusted (see valid_rows) and they get new ones at the next sync.
    """

    __slots__ = ("table", "first", "valid")

    def __init__(self, table, first, valid):
        self.table, self.first, self.valid = table, first, valid

    def __len__(self):
        return len(self.table) - self.first

    def __bool__(self):
        return len(self) > 0

    def _row(self, n):
        i = self.first + n
        return self.table.message(i, None if i < self.valid else 0)

    def __getitem__(self, n):
        count = len(self)
        if isinstance(n, slice):
            return [self._row(j) for j in range(*n.indices(count))]
        if n < 0:
            n += count
        if not 0 <= n < count:
            raise IndexError("message number out of range")
        return self._row(n)

    def __iter__(self):
        return (self._row(n) for n in range(len(self)))

    def __eq__(self, other):
        return list(self) == list(other)

    def __repr__(self):
        return f"<{len(self)} messages>"


def valid_rows(table, imapbase, known=0):
    """How many leading rows keep their X-UIDs: while they ascend and stay within UIDLAST (0 with no UID state).

    The first row without one, or out of order, and every row after it,
    get new UIDs, so UIDs always ascend in file order (as Dovecot renumbers
    from the first broken one).  A pseudo-message in the first row has none
    and counts as kept.  The first KNOWN rows are known to hold already
    (checked against this UIDLAST or a lower one).
    """
    if imapbase is None:
        return 0
    uidlast = imapbase[1]
    uids = table.uid
    count = len(table)
    first = 1 if count and table.flags[0] & PSEUDO else 0
    start = max(known, first)
    previous = uids[start - 1] if start > first else 0
    if start >= count:
        return count
    if uids[start] > previous and uids[count - 1] <= uidlast and all(uids[start:]) and _ascending(uids, start, count):
        return count
    for i in range(start, count):
        uid = uids[i]
        if not uid or uid <= previous or uid > uidlast:
            return i
        previous = uid
    return count


def _ascending(column, lo, hi):
    """Whether column[lo:hi] strictly ascends (checked in C: sorted, and no two alike)."""
    part = column[lo:hi]
    items = part.tolist() if hasattr(part, "tolist") else list(part)
    return items == sorted(items) and len(set(items)) == len(items)


class Index:
    """The result of a scan: messages in file order and the mailbox's UID state.

    `base_in_file` says whether the file itself holds the UID state
    (X-IMAPbase or X-IMAP); when it does not, the state came from the
    index cache (the first message was deleted by a mail reader) or is
    not known yet, and the next sync writes it.  Rows from `valid` on have
    no trusted UID yet (shown as 0).
    """

    def __init__(self, table, uidvalidity, uidlast, keywords, size, base_in_file=True, valid=None):
        self.table = table
        self.valid = valid if valid is not None else len(table)
        self.first = 1 if len(table) and table.flags[0] & PSEUDO else 0
        self.all = MessageList(table, 0, self.valid)              # including a pseudo-message
        self.messages = MessageList(table, self.first, self.valid)
        self.uidvalidity = uidvalidity                            # 0: none assigned yet
        self.uidlast = uidlast
        self.keywords = keywords
        self.size = size
        self.base_in_file = base_in_file

    @property
    def count(self):
        return len(self.table) - self.first

    def count_without(self, letter):
        """How many messages lack a flag letter (UNSEEN: "R", RECENT: "O"), counted in C."""
        return bytes(self.table.flags[self.first:]).translate(WITHOUT[letter]).count(1)

    def uid_at(self, i):
        """The trusted UID of row I (0: none yet)."""
        return self.table.uid[i] if i < self.valid else 0

    @property
    def all_have_uids(self):
        return self.valid == len(self.table)

    @property
    def uidnext(self):
        last = self.table.uid[self.valid - 1] if self.valid > self.first else 0
        return max(self.uidlast, last) + 1

    def row_of_uid(self, uid):
        """The row of the message with UID, or -1 (UIDs ascend in the trusted rows)."""
        uids = self.table.uid
        i = bisect.bisect_left(uids, uid, self.first, self.valid)
        return i if i < self.valid and uids[i] == uid and uid else -1

    def by_uid(self):
        return {m.uid: m for m in self.messages if m.uid}

    def message_of_uid(self, uid):
        i = self.row_of_uid(uid)
        return self.table.message(i) if i >= 0 else None
