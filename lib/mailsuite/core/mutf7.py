"""Modified UTF-7 (RFC 3501 5.1.3), how IMAP mailbox names travel and how they are stored on disk.

imapd judges the names clients send (`decode` refuses anything the RFC
forbids); the webmail shows the names imapd lists (`for_display` never
fails).
"""

import base64
import re


def decode(name):
    """Modified UTF-7 to text; raises ValueError when the name is not valid mUTF-7."""
    out, i = [], 0
    while i < len(name):
        c = name[i]
        if c != "&":
            if not 0x20 <= ord(c) <= 0x7E:
                raise ValueError("8-bit or control characters must be modified UTF-7 encoded")
            out.append(c)
            i += 1
            continue
        end = name.find("-", i)
        if end < 0:
            raise ValueError("unterminated '&' sequence")
        chunk = name[i + 1 : end]
        if not chunk:
            out.append("&")
        else:
            if not re.fullmatch(r"[A-Za-z0-9+,]+", chunk):
                raise ValueError("bad '&' sequence")
            raw = chunk.replace(",", "/")
            raw += "=" * (-len(raw) % 4)
            try:
                text = base64.b64decode(raw).decode("utf-16-be")
            except (ValueError, UnicodeDecodeError):
                raise ValueError("bad '&' sequence") from None
            if any(0x20 <= ord(ch) <= 0x7E for ch in text):
                raise ValueError("printable ASCII must not be encoded")
            out.append(text)
        i = end + 1
    return "".join(out)


def for_display(name):
    """The text of NAME, or NAME itself when it is not valid modified UTF-7."""
    try:
        return decode(name)
    except ValueError:
        return name


def encode(text):
    """Text to modified UTF-7: printable ASCII as itself (& as &-), the rest as &BASE64-."""
    out, pending = [], []

    def flush():
        if pending:
            data = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(data).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in text:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)
