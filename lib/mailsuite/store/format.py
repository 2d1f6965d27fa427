"""The mbox format itself: From_ lines, quoting, the store's headers.

Rules every writer and reader of a spool shares (see DESIGN.md, Mbox
format):

* A message begins with a valid From_ line, `From SENDER DATE` (the date
  in asctime form, as Dovecot's parser accepts it), at the start of the
  file or after a newline.  Flags, keywords and UIDs live in the headers
  Dovecot and UW IMAP use, which clients never see.
* One quoting rule for the whole suite, Dovecot's: **no reader ever
  unquotes**.  IMAP, POP3 and `mail` serve the stored bytes (minus the
  hidden headers, with CRLF on the wire), so every program, Dovecot
  included, shows the same message with the same size.  Delivery
  (mail.local, the MTA, `/file` targets) quotes body lines matching
  `^>*From ` with one more `>` (mboxrd), so the spool stays readable by
  every mboxo reader; a copy of a message that is already stored, or one a
  client hands over (IMAP APPEND and COPY, `mail`'s save, copy and
  ~/mbox), is stored exactly as given, with a `Content-Length:` header
  that tells readers where it ends, so APPEND then FETCH gives back the
  same bytes.  A body that does not end in a newline gets one, as in
  Dovecot.
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
# The lines clients never see, with their continuation lines (for the scanner's one regex pass).
HIDDEN_LINE = re.compile(rb"^(status|x-status|x-keywords|x-uid|x-imapbase|x-imap|content-length)[ \t]*:"
                         rb"(.*(?:\n[ \t].*)*)\n?", re.I | re.M)
FROM_LINE_MAX = 1024                # a From_ line is judged on its first bytes
_MONTH = rb"(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)"
# A valid From_ line, as Dovecot's mbox_from_parse() accepts it: sender (maybe quoted), then an
# asctime date ("Thu Nov 29 22:33:52 2001", seconds, zone and extra spaces optional) or the
# alternative "Thu, 29 Nov 2001 22:33:52".
_VALID_FROM = re.compile(
    rb"From (?:\"[^\"\n]*\")?[^ \n]* +"
    rb"(?:[^\n]{4}(?:" + _MONTH + rb"|\?\?\?)  ?(?:\d|\d\d) \d\d:\d\d(?::\d\d)? "
    rb"(?:[+-]\d{4} |(?!\d{4})[^ \n]* )?\d{4}"
    rb"|[^\n]{4} \d\d? " + _MONTH + rb" \d{4}[^\n]\d\d:\d\d)")
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


def is_from_line(data):
    """Whether DATA starts with a valid From_ line (the only thing that may separate messages)."""
    return _VALID_FROM.match(data) is not None


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
    """mboxrd: one more '>' on every line matching ^>*From  (delivery only; nothing unquotes)."""
    return _FROM_QUOTE.sub(rb">\1", data)


def header_lines_without(raw, names):
    """The lines of a header block (blank line excluded) minus the named headers and their continuations."""
    kept = []
    dropping = False
    for line in raw.rstrip(b"\n").split(b"\n") if raw.strip(b"\n") else ():
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        dropping = b":" in line and line.split(b":", 1)[0].strip().lower() in names
        if not dropping:
            kept.append(line)
    return kept


def served_header(raw):
    """A stored header block as clients get it: hidden headers removed, CRLF, and its blank line if it has one.

    RAW runs from the first header line to the body; it ends with the blank
    line unless the message has none (its header runs into the next From_
    line or the end of the file).
    """
    blank = raw == b"\n" or raw.endswith(b"\n\n")
    lines = header_lines_without(raw, HIDDEN_HEADERS)
    return b"".join(line.rstrip(b"\r") + b"\r\n" for line in lines) + (b"\r\n" if blank else b"")


def served_body(data):
    """Stored body bytes with CRLF line ends (a stored CRLF stays one CRLF)."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def render_block(*, flags, keywords, uid, imapbase=None, pseudo=False, pad_to=0, padding=0):
    """Our store headers, padded with spaces to pad_to bytes (or `padding` spare bytes).

    The padding goes at the end of X-Keywords:, or, in the pseudo-message
    (which has no keywords or UID of its own), at the end of X-IMAP:, so
    that UIDLAST and the keyword list can grow in place.
    """
    lines = []
    if imapbase is not None:
        uidvalidity, uidlast, base_keywords = imapbase
        name = "X-IMAP" if pseudo else "X-IMAPbase"
        lines.append(f"{name}: {uidvalidity} {uidlast:010d}" + "".join(" " + k for k in base_keywords))
    padded = 0                      # the line that takes the padding
    status = "".join(c for c in STATUS_LETTERS if c in flags)
    xstatus = "".join(c for c in XSTATUS_LETTERS if c in flags)
    if status:
        lines.append(f"Status: {status}")
    if xstatus:
        lines.append(f"X-Status: {xstatus}")
    if not pseudo:
        padded = len(lines)
        lines.append("X-Keywords:" + "".join(" " + k for k in keywords))
        if uid:
            lines.append(f"X-UID: {uid}")
    fixed = sum(len(line) + 1 for line in lines)
    spare = max(pad_to - fixed, 0) if pad_to else padding
    lines[padded] += " " * spare
    return ("\n".join(lines) + "\n").encode("utf-8")


def valid_keyword(word):
    return bool(_KEYWORD.fullmatch(word)) and not word.startswith("\\")
