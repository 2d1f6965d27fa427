"""Showing a stored message on a terminal: headers, text, attachments.

Messages arrive in every encoding the world uses; the terminal speaks one.
Headers are decoded from RFC 2047, text parts from base64 or
quoted-printable and their declared charset (undeclared 8-bit is taken as
UTF-8, then Latin-1), and everything is printed in the terminal's encoding
with unmappable characters replaced, never raising.  Non-text parts are not
dumped: they are listed with their number, type, size and file name, and
`detach` saves one byte-for-byte.
"""

import email
import email.header
import email.policy
import locale
from dataclasses import dataclass

_PARSE_POLICY = email.policy.compat32.clone(linesep="\n")


@dataclass(frozen=True)
class Part:
    number: int          # 1-based, in the order `attachments` lists them
    content_type: str
    filename: str
    size: int            # decoded bytes
    message: object      # the email.message.Message of the part


def parse(raw):
    """An email.message.Message from stored bytes (headers, blank line, body)."""
    return email.message_from_bytes(raw, policy=_PARSE_POLICY)


def decode_header(value):
    """Header text for people: RFC 2047 words decoded, raw 8-bit read as UTF-8 (else Latin-1)."""
    if value is None:
        return ""
    if isinstance(value, str) and "=?" not in value:
        return " ".join(value.split())
    try:
        chunks = email.header.decode_header(value)
    except (email.errors.HeaderParseError, ValueError):
        return " ".join(str(value).split())
    return " ".join("".join(_text(data, charset) for data, charset in chunks).split())


def _text(data, charset):
    if isinstance(data, str):
        return data
    for candidate in (charset if charset and charset != "unknown-8bit" else "utf-8", "utf-8"):
        try:
            return data.decode(candidate)
        except (LookupError, UnicodeDecodeError):
            continue
    return data.decode("latin-1")


def part_text(part):
    """A text part's content as str, whatever its transfer encoding and charset."""
    payload = part.get_payload(decode=True) or b""
    charset = part.get_content_charset() or "utf-8"
    for candidate in (charset, "utf-8", "latin-1"):
        try:
            return payload.decode(candidate)
        except (LookupError, UnicodeDecodeError):
            continue
    return payload.decode("latin-1")    # unreachable: latin-1 decodes anything


def _parts(msg):
    """Leaves of the MIME tree in order, with whether each is shown inline."""
    if msg.is_multipart():
        subtype = msg.get_content_subtype()
        children = msg.get_payload()
        if subtype == "alternative" and children:
            plain = [c for c in children if c.get_content_type() == "text/plain"]
            shown = plain[0] if plain else children[-1]
            for child in children:
                if child is shown:
                    yield from _parts(child)
                else:
                    yield from ((leaf, False) for leaf, _ in _parts(child))
            return
        for child in children:
            yield from _parts(child)
        return
    disposition = (msg.get_content_disposition() or "inline")
    inline = msg.get_content_maintype() == "text" and disposition == "inline" and not msg.get_filename()
    yield msg, inline


def attachments(msg):
    """Every leaf part that is not shown inline, numbered from 1."""
    out = []
    for leaf, inline in _parts(msg):
        if inline:
            continue
        data = leaf.get_payload(decode=True) or b""
        out.append(Part(len(out) + 1, leaf.get_content_type(), decode_header(leaf.get_filename() or ""),
                        len(data), leaf))
    return out


def render(raw, show_header, *, all_headers=False):
    """The message as text for the terminal: filtered headers, text parts, attachment list."""
    msg = parse(raw)
    lines = []
    for name, value in msg.items():
        if all_headers or show_header(name):
            lines.append(f"{name}: {decode_header(value)}")
    lines.append("")
    number = 0
    for leaf, inline in _parts(msg):
        if inline:
            lines.append(part_text(leaf).rstrip("\n"))
            continue
        number += 1
        size = len(leaf.get_payload(decode=True) or b"")
        name = decode_header(leaf.get_filename() or "")
        lines.append(f"[-- Attachment #{number}: {leaf.get_content_type()}, {size} bytes"
                     f"{', ' + name if name else ''} --]")
    return "\n".join(lines) + "\n"


def body_text(raw):
    """Only the inline text of a message (for quoting in replies and `~m`)."""
    msg = parse(raw)
    return "\n".join(part_text(leaf).rstrip("\n") for leaf, inline in _parts(msg) if inline)


def terminal_encoding():
    return locale.getpreferredencoding(False) or "utf-8"


# Control characters a message could use to drive the terminal (escape sequences, title
# changes, overprinting): shown as '?' rather than obeyed.  Newline and tab stay.
_CONTROLS = {c: "?" for c in [*range(0x00, 0x20), *range(0x7f, 0xa0)] if c not in (0x09, 0x0a)}


def for_terminal(text):
    """TEXT as bytes the terminal can show: controls defused, unmappable characters as '?'."""
    return text.translate(_CONTROLS).encode(terminal_encoding(), "replace")
