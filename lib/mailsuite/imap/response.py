"""Server responses in IMAP syntax: strings, lists and literals.

Responses are built from plain Python values and serialised here, so no
handler ever quotes a string by hand:

- `str`     raw protocol text: atoms, flags, numbers already formatted;
- `bytes`   a string value: quoted when it can be, a literal otherwise;
- `None`    NIL;
- `int`     a number;
- list/tuple a parenthesised list;
- `Run`     items with nothing between them (bodies of a multipart, addresses);
- `Literal` always a literal (message data);
- `Stream`  a literal whose bytes come from an iterator of chunks, so a big
            message body never sits in memory whole.
"""

_QUOTABLE = frozenset(range(0x20, 0x7F)) | {0x09}


class Literal:
    """A value always sent as a literal."""

    __slots__ = ("data",)

    def __init__(self, data):
        self.data = data


class Run(tuple):
    """Items written one after another with no space: `1*body` and `1*address` (RFC 3501 9)."""


class Stream:
    """A literal sent as it is read: `size` bytes from the iterable `chunks`."""

    __slots__ = ("size", "chunks")

    def __init__(self, size, chunks):
        self.size = size
        self.chunks = chunks


def quoted_or_literal(value):
    """A string value, quoted when every byte allows it."""
    if len(value) < 1024 and all(b in _QUOTABLE for b in value):
        return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(value) + value


def astring(text):
    """A mailbox name or similar for output: atom if it is one, else quoted/literal."""
    from .parser import ASTRING_CHARS

    raw = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    if raw and all(b in ASTRING_CHARS for b in raw) and raw.upper() != b"NIL":
        return raw
    return quoted_or_literal(raw)


def serialise(value):
    """Yield the wire bytes of one response value."""
    if value is None:
        yield b"NIL"
    elif isinstance(value, str):
        yield value.encode("utf-8", "surrogateescape")
    elif isinstance(value, bytes):
        yield quoted_or_literal(value)
    elif isinstance(value, bool):
        raise TypeError("booleans have no IMAP form")
    elif isinstance(value, int):
        yield str(value).encode()
    elif isinstance(value, Literal):
        yield b"{%d}\r\n" % len(value.data)
        yield value.data
    elif isinstance(value, Stream):
        yield b"{%d}\r\n" % value.size
        yield from value.chunks
    elif isinstance(value, Run):
        for item in value:
            yield from serialise(item)
    elif isinstance(value, (list, tuple)):
        yield b"("
        for i, item in enumerate(value):
            if i:
                yield b" "
            yield from serialise(item)
        yield b")"
    else:
        raise TypeError(f"cannot serialise {type(value).__name__}")


def untagged(*parts):
    """`* part part ...` with each part serialised."""
    yield b"* "
    for i, part in enumerate(parts):
        if i:
            yield b" "
        yield from serialise(part)
    yield b"\r\n"


def to_bytes(chunks):
    return b"".join(chunks)


def mailbox_name(name):
    """A mailbox name in a response: an atom when it is one, else quoted or a literal."""
    return astring(name).decode("utf-8", "surrogateescape")
