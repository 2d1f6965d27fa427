"""Header summary lines, the `h` listing users scan their mail by.

    >N  3 Bob Example      Tue Nov 24 07:05   12/345   Lunch on Friday?

The marker `>` points at the current message; the status letter follows
mailx: N new, U unread, R read in this session, * saved, P preserved, M
bound for ~/mbox, D deleted, space for read before.  The sender is the
display name when there is one, else the address; the line is cut to the
terminal width so a listing never wraps.
"""

import email.utils
import functools
import shutil
import time
import unicodedata


def status_letter(m):
    if m.deleted:
        return "D"
    if m.preserved:
        return "P"
    if m.saved:
        return "*"
    if m.to_mbox:
        return "M"
    if m.new:
        return "N"
    if not m.read:
        return "U"
    if m.answered:
        return "A"
    return "R" if "R" not in m.stored.flags else " "


def sender_name(m):
    return _display_name(m.sender) or m.stored.sender


@functools.lru_cache(maxsize=4096)          # a spool repeats its senders; parseaddr is slow
def _display_name(text):
    name, addr = email.utils.parseaddr(text)
    return name or addr


def short_date(m):
    """'Tue Nov 24 07:05' in local time, from Date: or else the From_ line."""
    return _local_date(m.date) or time.strftime("%a %b %e %H:%M", time.localtime(m.stored.date.timestamp()))


@functools.lru_cache(maxsize=4096)
def _local_date(text):
    try:
        when = email.utils.parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return ""
    return time.strftime("%a %b %e %H:%M", time.localtime(when))


def terminal_width():
    return shutil.get_terminal_size((80, 24)).columns


def line(folder, m, current, width=None):
    width = width or terminal_width()
    marker = ">" if m.number == current else " "
    size = f"{folder.line_count(m)}/{m.size}"
    text = (f"{marker}{status_letter(m)}{m.number:4d} {fit(sender_name(m), 18)} "
            f"{short_date(m):16} {size:>9}  {m.subject}")
    return fit(text, width - 1).rstrip()


def fit(text, columns):
    """TEXT cut or padded to COLUMNS terminal columns; East Asian wide characters take two."""
    if text.isascii():
        return text[:columns].ljust(columns)
    out, used = [], 0
    for char in text:
        if unicodedata.combining(char):
            out.append(char)
            continue
        cells = 2 if unicodedata.east_asian_width(char) in "WF" else 1
        if used + cells > columns:
            break
        out.append(char)
        used += cells
    return "".join(out) + " " * (columns - used)


def page_around(count, current, page):
    """The 1-based numbers of the page of PAGE messages that holds CURRENT."""
    if count == 0:
        return range(1, 1)
    first = ((max(current, 1) - 1) // page) * page + 1
    return range(first, min(count, first + page - 1) + 1)
