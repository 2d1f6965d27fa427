"""The header section of a message as a list of raw fields, for cleanup.

Cleanup must add, drop and rewrite a few header fields without touching the
rest byte for byte (signatures, odd encodings), so fields are kept as the
raw bytes they arrived as, continuation lines included; only the names are
decoded.  The body is never read into memory: `read_header()` stops at the
blank line and leaves the file positioned on the body.
"""

import re

MAX_HEADER_BYTES = 1 << 20
_FIELD_NAME = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:")


class Header:
    """Raw header fields in order; `fields` is a list of (name, raw bytes with LF)."""

    def __init__(self, fields=None):
        self.fields = list(fields or [])

    def get_all(self, name):
        """Unfolded text values of every field called NAME."""
        name = name.lower()
        return [_value(raw) for n, raw in self.fields if n.lower() == name]

    def has(self, name):
        name = name.lower()
        return any(n.lower() == name for n, _raw in self.fields)

    def remove(self, name):
        name = name.lower()
        self.fields = [(n, raw) for n, raw in self.fields if n.lower() != name]

    def replace(self, name, value):
        """Set the first NAME field to VALUE (or append it), dropping the others."""
        new = (name, format_field(name, value))
        lower = name.lower()
        out, done = [], False
        for n, raw in self.fields:
            if n.lower() == lower:
                if not done:
                    out.append(new)
                    done = True
                continue
            out.append((n, raw))
        if not done:
            out.append(new)
        self.fields = out

    def append(self, name, value):
        self.fields.append((name, format_field(name, value)))

    def prepend(self, name, value):
        self.fields.insert(0, (name, format_field(name, value)))

    def to_bytes(self):
        return b"".join(raw for _n, raw in self.fields)


def format_field(name, value):
    """NAME: VALUE as bytes with LF; VALUE may already hold folded lines."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    return name.encode("ascii") + b": " + data.rstrip(b"\n") + b"\n"


def _value(raw):
    text = raw.decode("utf-8", "replace")
    text = text.split(":", 1)[1] if ":" in text else ""
    return re.sub(r"\r?\n[ \t]+", " ", text).strip()


def read_header(f, *, limit=MAX_HEADER_BYTES):
    """(Header, leftover) from binary file F, reading up to and including the blank line.

    Lines are kept whole, however long.  LEFTOVER is bytes already read that
    belong to the body: the first line when the message has no header at
    all, or whatever passes LIMIT (bytes of header, continuation lines
    included, so memory stays bounded whatever the input)."""
    header = Header()
    current_name, current = None, []
    consumed = 0
    while True:
        line = f.readline(limit + 1)
        if not line:
            break
        if line.endswith(b"\r\n"):
            line = line[:-2] + b"\n"
        consumed += len(line)
        if line == b"\n":
            break
        continuation = line[:1] in (b" ", b"\t") and current_name is not None
        match = None if continuation else _FIELD_NAME.match(line)
        if consumed > limit or not (continuation or match):
            # the header ends here: this line, and what follows, is body
            if current_name is not None:
                header.fields.append((current_name, b"".join(current)))
            return header, (b"\n" if header.fields else b"") + line
        if continuation:
            current.append(line)
        else:
            if current_name is not None:
                header.fields.append((current_name, b"".join(current)))
            current_name, current = match.group(1).decode("ascii"), [line]
        if not line.endswith(b"\n"):
            current.append(b"\n")                  # the last line of input without a line end
    if current_name is not None:
        header.fields.append((current_name, b"".join(current)))
    return header, b""
