"""Showing a stored message on a terminal: headers, text, attachments.

Messages arrive in every encoding the world uses; the terminal speaks one.
Headers are decoded from RFC 2047, text parts from base64 or
quoted-printable and their declared charset (undeclared 8-bit is taken as
UTF-8, then Latin-1), and everything is printed in the terminal's encoding
with unmappable characters replaced, never raising.  Non-text parts are not
dumped: they are listed with their number, type, size and file name, and
`detach` saves one byte-for-byte.
"""

import base64
import binascii
import email
import email.header
import email.parser
import email.policy
import locale
import re
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
    """An email.message.Message from stored bytes (headers, blank line, body).

    The standard parser recurses once per nesting level; a message nested
    deeper than Python's stack is read as its header and one opaque body.
    """
    try:
        return email.message_from_bytes(raw, policy=_PARSE_POLICY)
    except RecursionError:
        return email.parser.BytesParser(policy=_PARSE_POLICY).parsebytes(raw, headersonly=True)


_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")


def decode_header(value):
    """Header text for people: RFC 2047 words decoded, raw 8-bit read as UTF-8 (else Latin-1).

    A Base64 word that does not decode is shown as [Invalid Base64 encoding],
    never silently dropped or turned into garbage; quoted-printable always
    decodes (bad escapes and raw 8-bit bytes are kept as they are).
    """
    if value is None:
        return ""
    if isinstance(value, email.header.Header):        # raw 8-bit in the header: compat32's unknown-8bit chunks
        value = "".join(_text(data, charset) for data, charset in email.header.decode_header(value))
    text, end, after_word = [], 0, False
    for word in _ENCODED_WORD.finditer(value):
        between = value[end:word.start()]
        if not (after_word and between.isspace()):     # white space between two encoded words is dropped
            text.append(between)
        text.append(_decode_word(*word.groups()))
        end, after_word = word.end(), True
    text.append(value[end:])
    return " ".join("".join(text).split())


def _decode_word(charset, encoding, encoded):
    charset = charset.split("*", 1)[0]                 # RFC 2231 language suffix
    if encoding in "bB":
        try:
            data = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except ValueError:                             # binascii.Error, or 8-bit bytes inside the word
            return "[Invalid Base64 encoding]"
    else:                                              # raw 8-bit inside a Q word is taken as it is
        data = binascii.a2b_qp(encoded.replace("_", " ").encode("utf-8", "surrogateescape"), header=False)
    return _text(data, charset)


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


# What a walk of the MIME tree yields for each piece: text shown inline, an
# attachment (listed, detachable), or the header of an enclosed message.
INLINE, ATTACHMENT, ENCLOSED = "inline", "attachment", "enclosed"
MAX_DEPTH = 32          # deeper nesting is shown as an attachment: a crafted message cannot exhaust the stack


def _parts(msg, depth=0):
    """(part, kind) for the pieces of MSG in order.

    Of a multipart/alternative only the version shown is walked (the plain
    text, else the last): the others say the same thing and are neither
    shown nor listed.  A message/rfc822 part yields its own header (ENCLOSED)
    and then its pieces, so a forwarded message reads as one.
    """
    if msg.get_content_type() == "message/rfc822" and depth < MAX_DEPTH:
        inner = msg.get_payload()
        inner = inner[0] if isinstance(inner, list) and inner else None
        if inner is not None:
            yield inner, ENCLOSED
            yield from _parts(inner, depth + 1)
            return
    if msg.is_multipart() and depth < MAX_DEPTH:
        children = msg.get_payload()
        if msg.get_content_subtype() == "alternative" and children:
            plain = [c for c in children if c.get_content_type() == "text/plain"]
            children = [plain[0] if plain else children[-1]]
        for child in children:
            yield from _parts(child, depth + 1)
        return
    disposition = (msg.get_content_disposition() or "inline")
    inline = msg.get_content_maintype() == "text" and disposition == "inline" and not msg.get_filename()
    yield msg, INLINE if inline else ATTACHMENT


def attachments(msg):
    """Every leaf part that is not shown inline, numbered from 1."""
    out = []
    for leaf, kind in _parts(msg):
        if kind != ATTACHMENT:
            continue
        data = leaf.get_payload(decode=True) or b""
        out.append(Part(len(out) + 1, leaf.get_content_type(), decode_header(leaf.get_filename() or ""),
                        len(data), leaf))
    return out


ENCLOSED_FIELDS = ("From", "Date", "Subject", "To", "Cc")


def render(raw, show_header, *, all_headers=False):
    """The message as text for the terminal: filtered headers, text parts, attachment list."""
    msg = parse(raw)
    lines = []
    for name, value in msg.items():
        if all_headers or show_header(name):
            lines.append(f"{name}: {decode_header(value)}")
    lines.append("")
    number = 0
    for part, kind in _parts(msg):
        if kind == INLINE:
            lines.append(part_text(part).rstrip("\n"))
        elif kind == ENCLOSED:
            lines.append("[-- Enclosed message --]")
            lines += [f"{name}: {decode_header(part[name])}" for name in ENCLOSED_FIELDS if part[name] is not None]
            lines.append("")
        else:
            number += 1
            size = len(part.get_payload(decode=True) or b"")
            name = decode_header(part.get_filename() or "")
            lines.append(f"[-- Attachment #{number}: {part.get_content_type()}, {size} bytes"
                         f"{', ' + name if name else ''} --]")
    return "\n".join(lines) + "\n"


def body_text(raw):
    """Only the inline text of a message (for quoting in replies and `~m`)."""
    msg = parse(raw)
    return "\n".join(part_text(part).rstrip("\n") for part, kind in _parts(msg) if kind == INLINE)


def terminal_encoding():
    return locale.getpreferredencoding(False) or "utf-8"


# Control characters a message could use to drive the terminal (escape sequences, title
# changes, overprinting): shown as '?' rather than obeyed.  Newline and tab stay.
_CONTROLS = {c: "?" for c in [*range(0x00, 0x20), *range(0x7f, 0xa0)] if c not in (0x09, 0x0a)}


def for_terminal(text):
    """TEXT as bytes the terminal can show: controls defused, unmappable characters as '?'."""
    return text.translate(_CONTROLS).encode(terminal_encoding(), "replace")
