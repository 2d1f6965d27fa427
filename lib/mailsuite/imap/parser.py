"""The IMAP command grammar (RFC 3501 section 9, with LITERAL+ from RFC 7888).

`parse_command(data)` turns one complete command, as it came off the wire
(literals included inline after their `{n}` CRLF), into a `Command` whose
arguments are already typed: sequence sets, fetch attributes with sections
and partials, search-key trees, flag lists, dates.  Anything that does not
follow the formal syntax raises `ParseError` with a message fit for a
tagged BAD, so the session never has to guess at half-parsed input.

Arguments are decoded as UTF-8 (with surrogate escapes, so 8-bit bytes are
never lost) except APPEND's message literal, which stays bytes.
"""

import datetime
import re
from collections import namedtuple


class ParseError(Exception):
    """The command does not follow the grammar; the text goes into BAD."""


class BadCharset(Exception):
    """SEARCH CHARSET names a charset we do not support (NO [BADCHARSET])."""


SUPPORTED_CHARSETS = ("UTF-8", "US-ASCII")

# --- character classes (RFC 3501 section 9) --------------------------------

_CTL = set(range(0x00, 0x20)) | {0x7F}
_ATOM_SPECIALS = set(b'(){ %*"\\]') | _CTL
ATOM_CHARS = frozenset(set(range(0x01, 0x80)) - _ATOM_SPECIALS)
ASTRING_CHARS = ATOM_CHARS | {ord("]")}
LIST_CHARS = ATOM_CHARS | set(b"%*]")
TAG_CHARS = ASTRING_CHARS - {ord("+")}

MAX_NUMBER = 2**32 - 1

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBER = {m.lower().encode(): i for i, m in enumerate(MONTHS, 1)}
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_SYSTEM_FLAG_CASE = {f.lower(): f for f in SYSTEM_FLAGS + ("\\Recent",)}

# --- result types ------------------------------------------------------------


class SequenceSet(namedtuple("SequenceSet", "ranges")):
    """Ranges of message numbers or UIDs; `None` stands for `*`: `ranges` is ((low, high), ...), int or None."""

    __slots__ = ()

    def resolve(self, largest):
        """The numbers in the set, given the largest one that exists (for `*`).

        A range is unordered (`5:2` is `2:5`) and `*` means `largest` even
        when the mailbox is empty (then nothing matches).
        """
        for low, high in self.ranges:
            low = largest if low is None else low
            high = largest if high is None else high
            if low > high:
                low, high = high, low
            yield low, high

    def contains(self, number, largest):
        return any(low <= number <= high for low, high in self.resolve(largest))

    def __str__(self):
        def one(n):
            return "*" if n is None else str(n)

        return ",".join(one(lo) if lo == hi else f"{one(lo)}:{one(hi)}" for lo, hi in self.ranges)


# part: (1, 2) for "1.2"; text: "", HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT, MIME;
# fields: header names for HEADER.FIELDS(.NOT), as sent
class Section(namedtuple("Section", "part text fields", defaults=((), "", ()))):
    """A BODY[...] section: part numbers, then an optional text specifier."""

    __slots__ = ()

    def __str__(self):
        spec = ".".join(str(n) for n in self.part)
        if self.text:
            spec = f"{spec}.{self.text}" if spec else self.text
        if self.fields:
            spec += " (" + " ".join(_quote_if_needed(f) for f in self.fields) + ")"
        return spec


# name: ENVELOPE, FLAGS, INTERNALDATE, RFC822, RFC822.HEADER, RFC822.SIZE, RFC822.TEXT, BODY,
# BODYSTRUCTURE, UID, or BODY[] (with a Section); partial: (origin, count)
class FetchAtt(namedtuple("FetchAtt", "name section partial peek", defaults=(None, None, False))):
    """One fetch attribute; `section` is set only for BODY[...] forms."""

    __slots__ = ()

    @property
    def sets_seen(self):
        return (self.section is not None and not self.peek) or self.name in ("RFC822", "RFC822.TEXT")

    def response_name(self):
        """The name the FETCH response echoes (RFC 3501 7.4.2)."""
        if self.section is None:
            return self.name
        name = f"BODY[{self.section}]"
        if self.partial:
            name += f"<{self.partial[0]}>"
        return name


FETCH_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_SIMPLE_FETCH = frozenset(
    ("ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE", "RFC822.TEXT", "BODYSTRUCTURE", "UID")
)


Store = namedtuple("Store", "mode silent flags")  # mode: "", "+" or "-"


Append = namedtuple("Append", "mailbox flags date message")  # date None = now; message bytes, or a file if big


Command = namedtuple("Command", "tag name args uid", defaults=((), False))  # name upper case, "UID FETCH" etc.


# --- the lexer ---------------------------------------------------------------


class Cursor:
    """Reads tokens from one command's bytes, literals inline.

    `spooled` maps the offset of a `{n}` to a file holding that literal's
    bytes, for big APPEND messages the reader kept out of memory.
    """

    def __init__(self, data, spooled=None):
        self.data = data
        self.pos = 0
        self.spooled = spooled or {}

    def fail(self, message):
        raise ParseError(message)

    def at_end(self):
        return self.pos >= len(self.data)

    def peek(self, n=1):
        return self.data[self.pos : self.pos + n]

    def expect(self, text, what=None):
        if self.data[self.pos : self.pos + len(text)].upper() != text.upper():
            self.fail(f"expected {what or text.decode()!s}")
        self.pos += len(text)

    def space(self):
        if self.peek() != b" ":
            self.fail("expected a single space" if not self.at_end() else "missing argument")
        self.pos += 1

    def maybe_space(self):
        if self.peek() == b" ":
            self.pos += 1
            return True
        return False

    def end(self):
        if not self.at_end():
            if self.peek() == b" ":
                self.fail("unexpected extra arguments")
            if self.data[self.pos] >= 0x80:
                self.fail("8-bit characters are not allowed outside quoted strings and literals")
            self.fail(f"unexpected characters: {self._excerpt()}")

    def _excerpt(self):
        return self.data[self.pos : self.pos + 20].decode("ascii", "backslashreplace")

    def run_of(self, chars):
        start = self.pos
        data, n = self.data, len(self.data)
        while self.pos < n and data[self.pos] in chars:
            self.pos += 1
        return data[start : self.pos]

    def atom(self, chars=ATOM_CHARS, what="an atom"):
        value = self.run_of(chars)
        if not value:
            if not self.at_end() and self.data[self.pos] >= 0x80:
                self.fail(f"8-bit characters are not allowed in {what}")
            self.fail(f"expected {what}" if not self.at_end() else f"missing {what}")
        return value.decode("ascii")

    def number(self, nonzero=False):
        digits = self.run_of(b"0123456789")
        if not digits:
            self.fail("expected a number")
        value = int(digits)
        if value > MAX_NUMBER:
            self.fail("number too large")
        if nonzero and value == 0:
            self.fail("zero is not a valid message number")
        return value

    def quoted(self):
        self.expect(b'"')
        out = bytearray()
        data, n = self.data, len(self.data)
        while True:
            if self.pos >= n:
                self.fail("unterminated quoted string")
            c = data[self.pos]
            self.pos += 1
            if c == 0x22:
                return bytes(out)
            if c == 0x5C:
                if self.pos >= n or data[self.pos] not in b'"\\':
                    self.fail("bad escape in quoted string")
                c = data[self.pos]
                self.pos += 1
            elif c in (0x0D, 0x0A, 0x00):
                self.fail("CR, LF or NUL in a quoted string")
            out.append(c)

    def literal(self, allow_file=False):
        m = _LITERAL.match(self.data, self.pos)
        if not m:
            self.fail("bad literal")
        if self.pos in self.spooled:
            if not allow_file:
                self.fail("literal too large here")
            self.pos = m.end()
            return self.spooled[m.start()]
        size = int(m.group(1))
        start = m.end()
        if start + size > len(self.data):
            self.fail("literal shorter than announced")
        self.pos = start + size
        return self.data[start : self.pos]

    def string_bytes(self):
        c = self.peek()
        if c == b'"':
            return self.quoted()
        if c == b"{":
            return self.literal()
        self.fail("expected a quoted string or literal")

    def astring_bytes(self):
        if self.peek() in (b'"', b"{"):
            return self.string_bytes()
        return self.atom(ASTRING_CHARS, "an astring").encode()

    def astring(self):
        return _text(self.astring_bytes())

    def nstring(self):
        if self.peek(3).upper() == b"NIL" and self.peek(4)[3:4] in (b"", b" ", b")"):
            self.pos += 3
            return None
        return _text(self.string_bytes())

    def mailbox(self):
        name = self.astring()
        return "INBOX" if name.upper() == "INBOX" else name

    def list_mailbox(self):
        if self.peek() in (b'"', b"{"):
            return _text(self.string_bytes())
        return self.atom(LIST_CHARS, "mailbox pattern")

    def sequence_set(self):
        m = _SEQUENCE.match(self.data, self.pos)
        if not m:
            self.fail("bad sequence set" + (f": {self._excerpt()}" if not self.at_end() else ""))
        self.pos = m.end()
        ranges = []
        for item in m.group(0).split(b","):
            ends = [None if part == b"*" else int(part) for part in item.split(b":")]
            for n in ends:
                if n is not None and not 0 < n <= MAX_NUMBER:
                    self.fail("bad sequence set: numbers are 1 to 4294967295")
            ranges.append((ends[0], ends[-1]))
        if self.peek() not in (b"", b" ", b")"):
            self.fail(f"bad sequence set: {self._excerpt()}")
        return SequenceSet(tuple(ranges))

    def flag(self):
        if self.peek() == b"\\":
            self.pos += 1
            if self.peek() == b"*":
                self.fail("\\* is not a flag")
            name = "\\" + self.atom(what="flag")
            return _SYSTEM_FLAG_CASE.get(name.lower(), name)
        return self.atom(what="flag")

    def flag_list(self):
        self.expect(b"(", "flag list")
        flags = []
        if self.peek() != b")":
            flags.append(self.flag())
            while self.maybe_space():
                flags.append(self.flag())
        self.expect(b")", "')' closing the flag list")
        return tuple(flags)

    def date(self):
        quoted = self.peek() == b'"'
        if quoted:
            self.pos += 1
        m = _DATE.match(self.data, self.pos)
        if not m or m.group(2).lower() not in _MONTH_NUMBER:
            self.fail("bad date, expected e.g. 1-Feb-2024")
        self.pos = m.end()
        if quoted:
            self.expect(b'"', "closing quote of the date")
        try:
            return datetime.date(int(m.group(3)), _MONTH_NUMBER[m.group(2).lower()], int(m.group(1)))
        except ValueError:
            self.fail("no such date")

    def date_time(self):
        m = _DATE_TIME.match(self.data, self.pos)
        if not m or m.group(2).lower() not in _MONTH_NUMBER:
            self.fail('bad date-time, expected e.g. "01-Feb-2024 10:00:00 +0000"')
        self.pos = m.end()
        day, month, year, hh, mm, ss, zone = m.groups()
        offset = (int(zone[1:3]) * 60 + int(zone[3:5])) * (-1 if zone[0:1] == b"-" else 1)
        try:
            return datetime.datetime(
                int(year), _MONTH_NUMBER[month.lower()], int(day.strip()), int(hh), int(mm), int(ss),
                tzinfo=datetime.timezone(datetime.timedelta(minutes=offset)),
            )
        except ValueError:
            self.fail("no such date-time")


_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n")
_SEQ_NUMBER = rb"(?:\d+|\*)"
_SEQUENCE = re.compile(rb"%s(?::%s)?(?:,%s(?::%s)?)*" % ((_SEQ_NUMBER,) * 4))
_DATE = re.compile(rb"(\d{1,2})-([A-Za-z]{3})-(\d{4})")
_DATE_TIME = re.compile(rb'"([ \d]\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-]\d{4})"')


def _text(raw):
    return raw.decode("utf-8", "surrogateescape")


def _quote_if_needed(name):
    if name and all(ord(c) in ASTRING_CHARS for c in name):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- per-command arguments ---------------------------------------------------


def _no_args(c):
    return ()


def _one_mailbox(c):
    c.space()
    return (c.mailbox(),)


def _login(c):
    c.space()
    user = c.astring()
    c.space()
    return (user, c.astring())


def _authenticate(c):
    c.space()
    mechanism = c.atom(what="authentication mechanism").upper()
    initial = None
    if c.maybe_space():  # SASL-IR (RFC 4959): base64 or "="
        initial = c.atom(what="initial response")
    return (mechanism, initial)


def _rename(c):
    c.space()
    old = c.mailbox()
    c.space()
    return (old, c.mailbox())


def _list(c):
    c.space()
    reference = c.mailbox() if c.peek() not in (b'"', b"{") else _text(c.string_bytes())
    c.space()
    return (reference, c.list_mailbox())


STATUS_ITEMS = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN")


def _status(c):
    c.space()
    mailbox = c.mailbox()
    c.space()
    c.expect(b"(", "'(' before status items")
    items = []
    while True:
        item = c.atom(what="status item").upper()
        if item not in STATUS_ITEMS:
            c.fail(f"unknown status item {item}")
        items.append(item)
        if not c.maybe_space():
            break
    c.expect(b")", "')' closing the status items")
    return (mailbox, tuple(items))


def _append(c):
    c.space()
    mailbox = c.mailbox()
    c.space()
    flags = ()
    if c.peek() == b"(":
        flags = c.flag_list()
        c.space()
    date = None
    if c.peek() == b'"':
        date = c.date_time()
        c.space()
    if c.peek() != b"{":
        c.fail("APPEND needs the message as a literal")
    return (Append(mailbox, flags, date, c.literal(allow_file=True)),)


def _fetch(c):
    c.space()
    sequence = c.sequence_set()
    c.space()
    atts = []
    word = c.peek(4).upper()
    if c.peek() == b"(":
        c.pos += 1
        atts.extend(_fetch_att(c))
        while c.maybe_space():
            atts.extend(_fetch_att(c))
        c.expect(b")", "')' closing the fetch attributes")
    elif any(word.startswith(m.encode()) for m in FETCH_MACROS) and _macro_here(c):
        atts.extend(FetchAtt(n) for n in FETCH_MACROS[c.atom().upper()])
    else:
        atts.extend(_fetch_att(c))
    return (sequence, tuple(atts))


def _macro_here(c):
    m = re.match(rb"(ALL|FAST|FULL)(?=$|[ )])", c.data[c.pos :], re.I)
    return bool(m)


def _fetch_att(c):
    name = c.run_of(ATOM_CHARS - {ord("["), ord("<")}).decode("ascii").upper()
    if not name:
        c.fail("expected a fetch attribute")
    if name in _SIMPLE_FETCH:
        return [FetchAtt(name)]
    if name in ("BODY", "BODY.PEEK"):
        if c.peek() != b"[":
            if name == "BODY.PEEK":
                c.fail("BODY.PEEK needs a section")
            return [FetchAtt("BODY")]
        section = _section(c)
        partial = None
        if c.peek() == b"<":
            c.pos += 1
            origin = c.number()
            c.expect(b".", "'.' in the partial <origin.count>")
            count = c.number(nonzero=True)
            c.expect(b">", "'>' closing the partial")
            partial = (origin, count)
        return [FetchAtt("BODY[]", section, partial, peek=name == "BODY.PEEK")]
    if name in FETCH_MACROS:
        c.fail(f"{name} cannot be used inside a list")
    c.fail(f"unknown fetch attribute {name}")


def _section(c):
    c.expect(b"[")
    part = []
    while c.peek().isdigit():
        part.append(c.number(nonzero=True))
        if c.peek() == b".":
            c.pos += 1
        else:
            break
    text, fields = "", ()
    word = c.run_of(frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz.")).decode().upper()
    if word:
        if word not in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"):
            c.fail(f"bad section {word}")
        if word == "MIME" and not part:
            c.fail("MIME needs a part number")
        text = word
        if word.startswith("HEADER.FIELDS"):
            c.space()
            c.expect(b"(", "'(' before the header list")
            names = [c.astring()]
            while c.maybe_space():
                names.append(c.astring())
            c.expect(b")", "')' closing the header list")
            fields = tuple(names)
    elif part and c.data[c.pos - 1 : c.pos] == b".":
        c.fail("bad section: trailing '.'")
    c.expect(b"]", "']' closing the section")
    return Section(tuple(part), text, fields)


def _store(c):
    c.space()
    sequence = c.sequence_set()
    c.space()
    mode = ""
    if c.peek() in (b"+", b"-"):
        mode = c.peek().decode()
        c.pos += 1
    item = c.atom(what="FLAGS").upper()
    if item not in ("FLAGS", "FLAGS.SILENT"):
        c.fail("STORE takes FLAGS, +FLAGS or -FLAGS (optionally .SILENT)")
    c.space()
    if c.peek() == b"(":
        flags = c.flag_list()
    else:
        flags = [c.flag()]
        while c.maybe_space():
            flags.append(c.flag())
        flags = tuple(flags)
    if "\\Recent" in flags:
        c.fail("\\Recent cannot be stored")
    return (sequence, Store(mode, item.endswith(".SILENT"), flags))


def _copy(c):
    c.space()
    sequence = c.sequence_set()
    c.space()
    return (sequence, c.mailbox())


def _uid_expunge(c):
    c.space()
    return (c.sequence_set(),)


def _id(c):
    c.space()
    if c.peek(3).upper() == b"NIL":
        c.pos += 3
        return (None,)
    c.expect(b"(", "'(' or NIL")
    pairs = {}
    if c.peek() != b")":
        while True:
            key = _text(c.string_bytes())
            c.space()
            pairs[key] = c.nstring()
            if not c.maybe_space():
                break
    c.expect(b")", "')' closing the ID list")
    return (pairs,)


def _search(c):
    c.space()
    charset = None
    if c.peek(8).upper() == b"CHARSET ":
        c.pos += 8
        charset = c.astring().upper()
        if charset not in SUPPORTED_CHARSETS:
            raise BadCharset(charset)
        c.space()
    keys = [_search_key(c)]
    while c.maybe_space():
        keys.append(_search_key(c))
    return (charset, ("AND", tuple(keys)) if len(keys) > 1 else keys[0])


_SEARCH_FLAGS = {
    "ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "NEW", "OLD", "RECENT", "SEEN",
    "UNANSWERED", "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN",
}
_SEARCH_STRINGS = {"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"}
_SEARCH_DATES = {"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"}
MAX_SEARCH_DEPTH = 50


def _search_key(c, depth=0):
    """One search key as a tree: ('FROM', 'bob'), ('NOT', key), ('AND', keys)."""
    if depth > MAX_SEARCH_DEPTH:
        c.fail("search keys nested too deeply")
    head = c.peek()
    if head == b"(":
        c.pos += 1
        keys = [_search_key(c, depth + 1)]
        while c.maybe_space():
            keys.append(_search_key(c, depth + 1))
        c.expect(b")", "')' closing the search keys")
        return ("AND", tuple(keys))
    if head.isdigit() or head == b"*":
        return ("SEQUENCE", c.sequence_set())
    key = c.atom(what="search key").upper()
    if key in _SEARCH_FLAGS:
        return (key,)
    c.space()
    if key in _SEARCH_STRINGS:
        return (key, c.astring())
    if key in _SEARCH_DATES:
        return (key, c.date())
    if key in ("KEYWORD", "UNKEYWORD"):
        return (key, c.atom(what="keyword"))
    if key == "HEADER":
        name = c.astring()
        c.space()
        return (key, name, c.astring())
    if key in ("LARGER", "SMALLER"):
        return (key, c.number())
    if key == "UID":
        return (key, c.sequence_set())
    if key == "NOT":
        return (key, _search_key(c, depth + 1))
    if key == "OR":
        first = _search_key(c, depth + 1)
        c.space()
        return (key, first, _search_key(c, depth + 1))
    c.fail(f"unknown search key {key}")


ARGUMENTS = {
    "CAPABILITY": _no_args,
    "NOOP": _no_args,
    "LOGOUT": _no_args,
    "STARTTLS": _no_args,
    "AUTHENTICATE": _authenticate,
    "LOGIN": _login,
    "SELECT": _one_mailbox,
    "EXAMINE": _one_mailbox,
    "CREATE": _one_mailbox,
    "DELETE": _one_mailbox,
    "RENAME": _rename,
    "SUBSCRIBE": _one_mailbox,
    "UNSUBSCRIBE": _one_mailbox,
    "LIST": _list,
    "LSUB": _list,
    "STATUS": _status,
    "APPEND": _append,
    "CHECK": _no_args,
    "CLOSE": _no_args,
    "EXPUNGE": _no_args,
    "SEARCH": _search,
    "FETCH": _fetch,
    "STORE": _store,
    "COPY": _copy,
    "MOVE": _copy,
    "IDLE": _no_args,
    "NAMESPACE": _no_args,
    "ID": _id,
    "UNSELECT": _no_args,
}
UID_ARGUMENTS = {
    "FETCH": _fetch,
    "SEARCH": _search,
    "STORE": _store,
    "COPY": _copy,
    "MOVE": _copy,
    "EXPUNGE": _uid_expunge,
}


def parse_tag(data):
    """The tag of a line, or None when it has none worth answering to."""
    m = re.match(rb"[^\x00-\x20(){%*\"\\+\x7f-\xff]+", data)
    return m.group(0).decode("ascii") if m and data[m.end() : m.end() + 1] in (b" ", b"") else None


def parse_command(data, spooled=None):
    """Parse one command (without its final CRLF) into a `Command`.

    Raises ParseError for any syntax error; `.tag` on the error carries the
    tag when one could be read, for a tagged BAD.
    """
    c = Cursor(data, spooled)
    tag = parse_tag(data)
    try:
        if tag is None:
            c.fail("missing or invalid tag")
        c.pos = len(tag)
        c.space()
        name = c.atom(what="command name").upper()
        uid = name == "UID"
        if uid:
            c.space()
            name = c.atom(what="command name").upper()
            grammar = UID_ARGUMENTS.get(name)
        else:
            grammar = ARGUMENTS.get(name)
        if grammar is None:
            c.fail(f"unknown command {'UID ' if uid else ''}{name}")
        args = grammar(c)
        c.end()
    except (ParseError, BadCharset) as exc:
        exc.tag = tag
        raise
    return Command(tag, ("UID " if uid else "") + name, args, uid)
