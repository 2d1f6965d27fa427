"""SEARCH: every RFC 3501 search key, evaluated against one message at a time.

`compile_search(tree)` turns the parser's key tree into a predicate over a
`SearchContext`, which reads the store only for what a key needs: flag,
size, date and UID keys never touch the file, header keys read the header
only, BODY and TEXT read the body.  Keys in an AND are ordered cheapest
first so that `UNSEEN BODY x` reads only unseen messages' bodies.

Strings match case-insensitively as substrings (RFC 3501 6.4.4) after
RFC 2047 decoding of header fields and transfer/charset decoding of text
parts, so a client searching for "Grüße" in UTF-8 finds it whatever
encoding the sender chose.  FROM, TO, CC and BCC match the addresses as
parsed for ENVELOPE, written out as `name <local@domain>` (comments and
white space inside an address gone, as Dovecot does), so what a client was
shown is what it can find.
"""

import base64
import binascii
import email.errors
import email.header
import email.utils
import quopri

from . import bodystructure

FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True),
    "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True),
    "SEEN": ("\\Seen", True),
    "UNANSWERED": ("\\Answered", False),
    "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
}
ADDRESS_KEYS = {"FROM": b"from", "TO": b"to", "CC": b"cc", "BCC": b"bcc"}
_NEEDS_QUOTES = frozenset(b'()<>[]:;@\\,."')
MAX_DECODED_TEXT = 64 << 20


class SearchContext:
    """One message's searchable facts; expensive ones computed on first use."""

    def __init__(self, seq, uid, flags, recent, internaldate, size, client_message, largest_seq, largest_uid):
        self.seq = seq
        self.uid = uid
        self.flags = flags  # set of IMAP flag names incl. keywords
        self.recent = recent
        self.internaldate = internaldate
        self._size = size  # int or a callable
        self.message = client_message
        self.largest_seq = largest_seq
        self.largest_uid = largest_uid
        self._fields = None
        self._decoded = {}
        self._body_text = None

    @property
    def size(self):
        if callable(self._size):
            self._size = self._size()
        return self._size

    @property
    def fields(self):
        if self._fields is None:
            self._fields = bodystructure.header_fields(self.message.header)
        return self._fields

    def header_text(self, name):
        """Decoded values of every field with that name, case-folded."""
        if name not in self._decoded:
            values = [decode_header_value(v) for n, v in self.fields if n == name]
            self._decoded[name] = [v.casefold() for v in values]
        return self._decoded[name]

    def address_text(self, name):
        """Every address field with that name as its parsed addresses, written out and case-folded."""
        key = ("addresses", name)
        if key not in self._decoded:
            self._decoded[key] = [written_addresses(v).casefold() for n, v in self.fields if n == name]
        return self._decoded[key]

    def has_header(self, name):
        return any(n == name for n, _ in self.fields)

    def body_text(self):
        if self._body_text is None:
            self._body_text = decoded_body_text(self.message).casefold()
        return self._body_text

    def sent_date(self):
        value = bodystructure.first(self.fields, b"date")
        if value:
            try:
                parsed = email.utils.parsedate_to_datetime(value.decode("latin-1"))
                if parsed is not None:
                    return parsed.date()
            except (TypeError, ValueError, IndexError):
                pass
        return self.internaldate.date()


def decode_header_value(raw):
    """RFC 2047 words decoded; raw 8-bit taken as UTF-8."""
    text = raw.decode("utf-8", "replace")
    if "=?" not in text:
        return text
    try:
        return str(email.header.make_header(email.header.decode_header(text)))
    except (email.errors.HeaderParseError, LookupError, UnicodeError, ValueError):
        return text


def written_addresses(raw):
    """An address list as ENVELOPE parses it, written back as text: `Name <a@b>, g: c@d;`."""
    text, separator = "", ""
    for name, route, local, domain in (bodystructure.parse_addresses(raw) or [()])[0]:
        if domain is None:  # a group: its name starts it, an all-NIL entry ends it
            text += f"{separator}{_text(local)}: " if local is not None else ";"
            separator = "" if local is not None else ", "
            continue
        address = _text(local or b"")
        if domain != bodystructure.MISSING_DOMAIN:
            address += "@" + _text(domain)
        if route:
            address = f"<{_text(route)}:{address}>"
        if name:
            phrase = decode_header_value(name)
            if _NEEDS_QUOTES.intersection(name):
                phrase = '"' + phrase.replace("\\", "\\\\").replace('"', '\\"') + '"'
            address = f"{phrase} {address}" if route else f"{phrase} <{address}>"
        text += separator + address
        separator = ", "
    return text


def _text(raw):
    return raw.decode("utf-8", "replace")


def _decode_transfer(data, encoding):
    encoding = (encoding or b"").strip().lower()
    try:
        if encoding == b"base64":
            return base64.b64decode(data, validate=False)
        if encoding == b"quoted-printable":
            return quopri.decodestring(data)
    except (binascii.Error, ValueError):
        pass
    return data


def _to_text(data, params):
    charset = dict(params).get(b"charset", b"utf-8").decode("ascii", "replace")
    try:
        return data.decode(charset, "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def decoded_body_text(message):
    """All text parts of a message, transfer- and charset-decoded, joined."""
    fields = bodystructure.header_fields(message.header)
    maintype, _, params = bodystructure.parse_content_type(
        bodystructure.first(fields, b"content-type"), bodystructure.DEFAULT_TYPE
    )
    if maintype not in (b"multipart", b"message"):
        # one part: decode the body in one go, no MIME walk
        if maintype != b"text":
            return ""
        raw = b"".join(message.range_chunks(len(message.header), len(message.header) + MAX_DECODED_TEXT))
        data = _decode_transfer(raw, bodystructure.first(fields, b"content-transfer-encoding"))
        return _to_text(data, params)
    root = bodystructure.parse(message.lines())
    pieces = []
    budget = MAX_DECODED_TEXT

    def walk(part):
        nonlocal budget
        if part.is_multipart:
            for child in part.children:
                walk(child)
            return
        if part.message is not None:
            pieces.append(" ".join(decode_header_value(v) for _, v in part.message.fields))
            walk(part.message)
            return
        maintype, _, params = part.type
        if (maintype not in (b"text", b"multipart") and not part.opaque) or budget <= 0:
            return  # an opaque part (nested too deep to parse) is searched as it stands
        raw = b"".join(message.range_chunks(part.body_start, min(part.end, part.body_start + budget)))
        budget -= len(raw)
        data = _decode_transfer(raw, bodystructure.first(part.fields, b"content-transfer-encoding"))
        pieces.append(_to_text(data, params))

    walk(root)
    return "\n".join(pieces)


# --- compilation ---------------------------------------------------------------

_COST = {"flags": 0, "header": 1, "body": 2}


def compile_search(key):
    """A predicate ctx -> bool for a parsed search key tree."""
    predicate, _ = _compile(key)
    return predicate


def _compile(key):
    name = key[0]
    if name == "AND":
        parts = sorted((_compile(k) for k in key[1]), key=lambda p: p[1])
        preds = [p for p, _ in parts]
        return (lambda ctx: all(p(ctx) for p in preds)), max(c for _, c in parts)
    if name == "OR":
        (a, ca), (b, cb) = _compile(key[1]), _compile(key[2])
        return (lambda ctx: a(ctx) or b(ctx)), max(ca, cb)
    if name == "NOT":
        inner, cost = _compile(key[1])
        return (lambda ctx: not inner(ctx)), cost
    if name == "ALL":
        return (lambda ctx: True), 0
    if name in FLAG_KEYS:
        flag, wanted = FLAG_KEYS[name]
        return (lambda ctx: (flag in ctx.flags) == wanted), 0
    if name == "RECENT":
        return (lambda ctx: ctx.recent), 0
    if name == "OLD":
        return (lambda ctx: not ctx.recent), 0
    if name == "NEW":
        return (lambda ctx: ctx.recent and "\\Seen" not in ctx.flags), 0
    if name in ("KEYWORD", "UNKEYWORD"):
        word, wanted = key[1].lower(), name == "KEYWORD"
        return (lambda ctx: any(f.lower() == word for f in ctx.flags) == wanted), 0
    if name == "LARGER":
        return (lambda ctx: ctx.size > key[1]), 0
    if name == "SMALLER":
        return (lambda ctx: ctx.size < key[1]), 0
    if name == "SEQUENCE":
        seq = key[1]
        return (lambda ctx: seq.contains(ctx.seq, ctx.largest_seq)), 0
    if name == "UID":
        uids = key[1]
        return (lambda ctx: uids.contains(ctx.uid, ctx.largest_uid)), 0
    if name in ("BEFORE", "ON", "SINCE"):
        return _date_test(name, key[1], lambda ctx: ctx.internaldate.date()), 0
    if name in ("SENTBEFORE", "SENTON", "SENTSINCE"):
        return _date_test(name[4:], key[1], SearchContext.sent_date), 1
    if name in ADDRESS_KEYS:
        field, needle = ADDRESS_KEYS[name], key[1].casefold()
        return (lambda ctx: any(needle in v for v in ctx.address_text(field))), 1
    if name == "SUBJECT":
        needle = key[1].casefold()
        return (lambda ctx: any(needle in v for v in ctx.header_text(b"subject"))), 1
    if name == "HEADER":
        field, needle = key[1].lower().encode("utf-8", "surrogateescape"), key[2].casefold()
        if not needle:
            return (lambda ctx: ctx.has_header(field)), 1
        return (lambda ctx: any(needle in v for v in ctx.header_text(field))), 1
    if name == "BODY":
        needle = key[1].casefold()
        return (lambda ctx: needle in ctx.body_text()), 2
    if name == "TEXT":
        needle = key[1].casefold()

        def text(ctx):
            header = decode_header_value(ctx.message.header).casefold()
            return needle in header or needle in ctx.body_text()

        return text, 2
    raise ValueError(f"unknown search key {name}")


def _date_test(kind, when, get):
    if kind == "BEFORE":
        return lambda ctx: get(ctx) < when
    if kind == "ON":
        return lambda ctx: get(ctx) == when
    return lambda ctx: get(ctx) >= when

