"""MIME structure of a message: ENVELOPE, BODY, BODYSTRUCTURE and sections.

The message is parsed line by line from its client view (CRLF line ends,
store headers hidden), recording for every part where its header and body
start and end and how many lines the body has, so octet and line counts
are those of the bytes a client fetches.  Only headers are kept in memory;
bodies are located by offset and read back when a section is fetched.

Boundary handling follows RFC 2046: the CRLF before a delimiter line
belongs to the delimiter (whatever the part before it holds: text, a
nested multipart with its epilogue, an encapsulated message), nested
multiparts end at any enclosing boundary, and a missing close-delimiter
ends the part at the end of its parent.  Header fields are returned raw
(still RFC 2047-encoded), as RFC 3501 requires for ENVELOPE.

Nesting is bounded, as Dovecot bounds it: a multipart or message/rfc822
part MAX_DEPTH levels down is not descended into but kept whole as one
opaque application/octet-stream part, so a hostile message of a
thousand nested parts costs a bounded parse and answers normally.
"""

import re

from .response import Run

DEFAULT_TYPE = (b"text", b"plain", ((b"charset", b"us-ascii"),))
DIGEST_DEFAULT = (b"message", b"rfc822", ())
OPAQUE_TYPE = (b"application", b"octet-stream")
MISSING_DOMAIN = b"MISSING_DOMAIN"  # ENVELOPE's host for an address without one, as UW and Dovecot write it
MAX_DEPTH = 100  # levels of multipart/message nesting parsed, as Dovecot's message parser


# --- header fields -----------------------------------------------------------


def header_fields(raw):
    """[(lower-case name, raw value with folding removed)] in order."""
    fields = []
    for line in re.split(rb"\r?\n(?![ \t])", raw):
        if not line.strip():
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        value = re.sub(rb"\r?\n(?=[ \t])", b"", value)
        fields.append((name.strip().lower(), value.strip()))
    return fields


def first(fields, name):
    for key, value in fields:
        if key == name:
            return value
    return None


def split_header_lines(raw):
    """Header fields as raw byte blocks (name lower-case, the whole field with folding)."""
    blocks = re.split(rb"(?<=\n)(?![ \t])", raw)
    for block in blocks:
        if block in (b"", b"\r\n", b"\n"):
            continue
        yield block.split(b":", 1)[0].strip().lower(), block


def select_fields(raw, names, exclude):
    """HEADER.FIELDS / HEADER.FIELDS.NOT: the chosen fields plus the blank line."""
    wanted = {n.lower().encode("utf-8", "surrogateescape") for n in names}
    kept = [block for name, block in split_header_lines(raw) if (name in wanted) != exclude]
    return b"".join(kept) + b"\r\n"


# --- Content-Type and friends --------------------------------------------------

_TOKEN = rb"[^\x00-\x20()<>@,;:\\\"/\[\]?=\x7f]+"
_PARAM = re.compile(rb"\s*;\s*(" + _TOKEN + rb")\s*=\s*(\"(?:[^\"\\]|\\.)*\"|" + _TOKEN + rb")", re.S)


def _strip_comments(value):
    out, depth, quoted, escaped = bytearray(), 0, False, False
    for c in value:
        ch = bytes((c,))
        if escaped:
            escaped = False
            if depth == 0:
                out += ch
            continue
        if ch == b"\\":
            escaped = True
            if depth == 0:
                out += ch
            continue
        if quoted:
            if ch == b'"':
                quoted = False
            out += ch
        elif ch == b'"' and depth == 0:
            quoted = True
            out += ch
        elif ch == b"(":
            depth += 1
        elif ch == b")" and depth:
            depth -= 1
        elif depth == 0:
            out += ch
    return bytes(out)


def parse_params(rest):
    params = []
    for m in _PARAM.finditer(rest):
        value = m.group(2)
        if value.startswith(b'"'):
            value = re.sub(rb"\\(.)", rb"\1", value[1:-1])
        params.append((m.group(1).lower(), value))
    return tuple(params)


def parse_content_type(value, default):
    if value is None:
        return default
    value = _strip_comments(value)
    m = re.match(rb"\s*(" + _TOKEN + rb")\s*/\s*(" + _TOKEN + rb")", value)
    if not m:
        return default
    return (m.group(1).lower(), m.group(2).lower(), parse_params(value[m.end() :]))


def parse_disposition(value):
    if value is None:
        return None
    value = _strip_comments(value)
    m = re.match(rb"\s*(" + _TOKEN + rb")", value)
    if not m:
        return None
    return (m.group(1), parse_params(value[m.end() :]))


# --- addresses for ENVELOPE ------------------------------------------------------

_ADDR_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|\((?:[^()\\]|\\.)*\)|[<>@,;:]|[^\s"<>@,;:()]+|\s+', re.S)


def parse_addresses(value):
    """An address-list as ENVELOPE address structures (groups included)."""
    if value is None:
        return None
    tokens = [t for t in _ADDR_TOKENS.findall(value) if not t.isspace()]
    result = []
    i = 0

    def mailbox_at(start, stop):
        """(name, route, local, domain) from tokens[start:stop]."""
        toks = tokens[start:stop]
        comments = [t[1:-1] for t in toks if t.startswith(b"(")]
        toks = [t for t in toks if not t.startswith(b"(")]
        if not toks:
            return None  # nothing but comments (`group: (foo) ;`) is no address
        if b"<" in toks:
            lt = toks.index(b"<")
            gt = toks.index(b">") if b">" in toks else len(toks)
            name = _phrase(toks[:lt])
            addr = toks[lt + 1 : gt]
            route = None
            if b":" in addr:
                colon = addr.index(b":")
                route = b"".join(addr[:colon])
                addr = addr[colon + 1 :]
        else:
            name = comments[-1] if comments else None
            addr, route = toks, None
        if b"@" in addr:
            at = len(addr) - 1 - addr[::-1].index(b"@")
            local, domain = _unquote(b"".join(addr[:at])), b"".join(addr[at + 1 :])
        else:
            local, domain = _unquote(b"".join(addr)), None
        if not local and not name:
            return None
        return (name or None, route, local or None, domain or MISSING_DOMAIN)

    while i < len(tokens):
        # a group "name: a, b;" or a mailbox up to the next top-level comma
        j, depth_angle = i, False
        while j < len(tokens) and not (tokens[j] in (b",", b":") and not depth_angle):
            depth_angle = (depth_angle or tokens[j] == b"<") and tokens[j] != b">"
            j += 1
        if j < len(tokens) and tokens[j] == b":":
            result.append((None, None, _phrase(tokens[i:j]) or b"", None))
            i = j + 1
            while i < len(tokens) and tokens[i] != b";":
                k, angle = i, False
                while k < len(tokens) and not (tokens[k] in (b",", b";") and not angle):
                    angle = (angle or tokens[k] == b"<") and tokens[k] != b">"
                    k += 1
                member = mailbox_at(i, k)
                if member:
                    result.append(member)
                i = k + 1 if k < len(tokens) and tokens[k] == b"," else k
            result.append((None, None, None, None))
            i += 1
            if i < len(tokens) and tokens[i] == b",":
                i += 1
            continue
        item = mailbox_at(i, j)
        if item:
            result.append(item)
        i = j + 1
    return [Run(result)] if result else None


def _unquote(text):
    if text.startswith(b'"') and text.endswith(b'"') and len(text) > 1:
        return re.sub(rb"\\(.)", rb"\1", text[1:-1])
    return text


def _phrase(tokens):
    words = [_unquote(t) for t in tokens if not t.startswith(b"(")]
    return b" ".join(words) or None


def envelope(fields):
    """The ENVELOPE structure (RFC 3501 7.4.2) from a header's fields."""
    from_ = parse_addresses(first(fields, b"from"))
    sender = parse_addresses(first(fields, b"sender")) or from_
    reply_to = parse_addresses(first(fields, b"reply-to")) or from_
    return [
        first(fields, b"date"),
        first(fields, b"subject"),
        from_,
        sender,
        reply_to,
        parse_addresses(first(fields, b"to")),
        parse_addresses(first(fields, b"cc")),
        parse_addresses(first(fields, b"bcc")),
        first(fields, b"in-reply-to"),
        first(fields, b"message-id"),
    ]


# --- the part tree ---------------------------------------------------------------


class Part:
    """One MIME part located in the client view of a message."""

    __slots__ = ("header", "fields", "header_start", "body_start", "end", "lines", "type", "children", "message",
                 "trimmed", "opaque")

    def __init__(self, header_start):
        self.header_start = header_start
        self.header = b""
        self.fields = []
        self.body_start = header_start
        self.end = header_start
        self.lines = 0
        self.type = DEFAULT_TYPE
        self.children = []
        self.message = None  # the encapsulated message's root, for message/rfc822
        self.trimmed = False  # the line end before a delimiter was taken off the body
        self.opaque = False  # a container too deep to parse: its body is kept as one blob

    @property
    def body_size(self):
        return self.end - self.body_start

    @property
    def is_multipart(self):
        return self.type[0] == b"multipart" and bool(self.children)

    def find(self, numbers):
        """The part for section numbers (1, 2); None when it does not exist.

        A non-multipart part has one part, numbered 1: itself, its body
        being what BODY[n] returns, which for a message/rfc822 part is the
        whole encapsulated message (RFC 3501 6.4.5).  Only a message/rfc822
        part has numbers below that: those of the message it carries.
        """
        part = self
        for position, n in enumerate(numbers):
            deeper = position + 1 < len(numbers)
            if part.is_multipart:
                if not 1 <= n <= len(part.children):
                    return None
                part = part.children[n - 1]
            elif n != 1 or (deeper and part.message is None):
                return None
            if deeper and part.message is not None:
                part = part.message
        return part


class _Lines:
    """Line source with pushback, the offset of the next line and a line count."""

    def __init__(self, lines):
        self._it = iter(lines)
        self._back = []
        self.offset = 0
        self.count = 0

    def next(self):
        line = self._back.pop() if self._back else next(self._it, None)
        if line is not None:
            self.offset += len(line)
            self.count += 1
        return line

    def unread(self, line):
        self._back.append(line)
        self.offset -= len(line)
        self.count -= 1

    def at_delimiter(self, boundaries):
        """Whether the next line is a delimiter of an enclosing multipart."""
        line = self.next()
        if line is None:
            return False
        self.unread(line)
        return bool(boundaries) and _boundary_of(line, boundaries) is not None


def _boundary_of(line, boundaries):
    """(boundary, is_close) when the line is a delimiter of an enclosing part."""
    if not line.startswith(b"--"):
        return None
    stripped = line.rstrip(b"\r\n").rstrip(b" \t")
    for b in reversed(boundaries):
        if stripped == b"--" + b + b"--":
            return b, True
        if stripped == b"--" + b:
            return b, False
    return None


def parse(lines):
    """The root Part of a message given its client-view lines."""
    return _parse_part(_Lines(lines), (), DEFAULT_TYPE, 0)


def _parse_part(src, boundaries, default_type, depth):
    part = Part(src.offset)
    header = []
    while True:
        line = src.next()
        if line is None:
            break
        if boundaries and _boundary_of(line, boundaries):
            src.unread(line)
            break
        header.append(line)
        if line in (b"\r\n", b"\n"):
            break
    part.header = b"".join(header)
    part.body_start = src.offset
    first_body_line = src.count
    part.fields = header_fields(part.header)
    part.type = parse_content_type(first(part.fields, b"content-type"), default_type)
    maintype, subtype, params = part.type
    boundary = dict(params).get(b"boundary") if maintype == b"multipart" else None
    container = boundary or (maintype, subtype) == (b"message", b"rfc822")
    own_text = part.body_start  # where the bytes start that a following delimiter may take a CRLF from
    if container and depth + 1 >= MAX_DEPTH:
        part.opaque = True
        _skip_to_delimiter(src, boundaries)
    elif boundary:
        epilogue = _parse_multipart(src, part, boundaries + (boundary,), subtype == b"digest", depth + 1)
        own_text = part.body_start if epilogue is None else epilogue
    elif container:
        part.message = _parse_part(src, boundaries, DEFAULT_TYPE, depth + 1)
    else:
        _skip_to_delimiter(src, boundaries)
    part.lines = src.count - first_body_line
    if part.message is not None:
        part.end, part.trimmed = part.message.end, part.message.trimmed
    else:
        part.end = src.offset
        if src.at_delimiter(boundaries) and part.end > own_text:
            # the CRLF before a delimiter belongs to it (RFC 2046 5.1.1); a close-delimiter
            # line keeps its own, as an empty header or body has none to give
            part.end -= 2
            part.trimmed = True
    if not part.trimmed and part.end == part.body_start and part.header.endswith(b"\n") \
            and src.at_delimiter(boundaries):
        part.header = part.header[:-2]  # no body to give the delimiter its CRLF: the header gives it
    if part.trimmed:
        part.lines -= 1  # lines are line ends within the body, as Dovecot counts them
    return part


def _skip_to_delimiter(src, boundaries):
    while True:
        line = src.next()
        if line is None:
            return
        if boundaries and _boundary_of(line, boundaries):
            src.unread(line)
            return


def _parse_multipart(src, part, boundaries, digest, depth):
    """Preamble, parts, epilogue; the offset of the epilogue, None when the close-delimiter is missing.

    A missing close-delimiter ends the multipart at its parent's end.
    """
    own = boundaries[-1]
    while True:
        line = src.next()
        if line is None:
            return None
        found = _boundary_of(line, boundaries)
        if not found:
            continue
        if found[0] != own:
            src.unread(line)
            return None
        if found[1]:
            break
        part.children.append(_parse_part(src, boundaries, DIGEST_DEFAULT if digest else DEFAULT_TYPE, depth))
    epilogue = src.offset
    _skip_to_delimiter(src, boundaries[:-1])
    return epilogue


# --- the structures --------------------------------------------------------------


def _params_list(params):
    return [x for pair in params for x in pair] if params else None


def _with_charset(maintype, params):
    """text/* without a charset is us-ascii (RFC 2045 5.2); say so, as Dovecot does."""
    if maintype == b"text" and not any(name == b"charset" for name, _ in params):
        return params + ((b"charset", b"us-ascii"),)
    return params


def _language(fields):
    value = first(fields, b"content-language")
    if value is None:
        return None
    langs = [v.strip() for v in _strip_comments(value).split(b",") if v.strip()]
    return langs or None


def body_structure(part, extended=True):
    """BODY (extended=False) or BODYSTRUCTURE of a part, as response values."""
    maintype, subtype, params = part.type
    fields = part.fields
    if part.is_multipart:
        out = [Run(body_structure(child, extended) for child in part.children), subtype]
        if extended:
            disposition = parse_disposition(first(fields, b"content-disposition"))
            out += [
                _params_list(params),
                [disposition[0], _params_list(disposition[1])] if disposition else None,
                _language(fields),
                first(fields, b"content-location"),
            ]
        return out
    if part.opaque:
        maintype, subtype = OPAQUE_TYPE
    elif maintype == b"multipart":  # no boundary or no parts: show it as text
        maintype, subtype, params = DEFAULT_TYPE
    out = [
        maintype,
        subtype,
        _params_list(_with_charset(maintype, params)),
        first(fields, b"content-id"),
        first(fields, b"content-description"),
        first(fields, b"content-transfer-encoding") or b"7bit",
        part.body_size,
    ]
    if part.message is not None:
        out += [envelope(part.message.fields), body_structure(part.message, extended), part.lines]
    elif maintype == b"text":
        out.append(part.lines)
    if extended:
        disposition = parse_disposition(first(fields, b"content-disposition"))
        out += [
            first(fields, b"content-md5"),
            [disposition[0], _params_list(disposition[1])] if disposition else None,
            _language(fields),
            first(fields, b"content-location"),
        ]
    return out
