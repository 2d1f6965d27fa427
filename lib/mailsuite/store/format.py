"""The mbox format itself: From_ lines, quoting, the store's headers.

Rules every writer and reader of a spool shares (see DESIGN.md, Mbox
format): a message begins with `From SENDER DATE`; body lines matching
`^>*From ` get one more `>` (mboxrd); flags, keywords and UIDs live in the
headers Dovecot and UW IMAP use, which clients never see.
"""

import re
import time

SYSTEM_FLAGS = "ROAFTD"             # R \Seen, O not \Recent, A \Answered, F \Flagged, T \Draft, D \Deleted
STATUS_LETTERS = "RO"
XSTATUS_LETTERS = "AFTD"
# Headers that belong to the store.  Content-Length is stripped on delivery
# but left alone in stored messages: rewrites never change a body.
STORE_HEADERS = {b"status", b"x-status", b"x-keywords", b"x-uid", b"x-imapbase"}
# What clients never see (POP3, IMAP), as Dovecot hides them; also what a
# sender may not set.
HIDDEN_HEADERS = STORE_HEADERS | {b"x-imap", b"content-length"}
STRIP_ON_DELIVERY = HIDDEN_HEADERS

_FROM_QUOTE = re.compile(rb"^(>*From )", re.M)
_KEYWORD = re.compile(r"[^\x00-\x20\x7f(){%*\"\\\]]+")


class MailboxError(Exception):
    """The file is not something we may treat as a mailbox (symlink, foreign owner, not mbox)."""


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


def header_lines_without(raw, names):
    """The lines of a header block (blank line excluded) minus the named headers and their continuations."""
    kept = []
    dropping = False
    for line in raw.rstrip(b"\n").split(b"\n") if raw.strip(b"\n") else ():
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        dropping = line.split(b":", 1)[0].strip().lower() in names
        if not dropping:
            kept.append(line)
    return kept


def served_header(raw):
    """A stored header block as clients get it: hidden headers removed, CRLF, one blank line at the end."""
    return b"".join(line.rstrip(b"\r") + b"\r\n" for line in header_lines_without(raw, HIDDEN_HEADERS)) + b"\r\n"


def served_body(data):
    """Stored body bytes with CRLF line ends (a stored CRLF stays one CRLF)."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


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
