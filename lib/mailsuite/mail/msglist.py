"""The message-list grammar that mailx commands take (`d 1-3 :u /invoice`).

A list is a sequence of specifications; the result is their union, in
message-number order, the way POSIX mailx and GNU Mailutils read it:

    N  N-M          numbers and ranges          ^ $ .   first, last, current
    *               every message                + -    next / previous
    :n :o :u :r     new, old, unread, read       :d     deleted
    :f              flagged                      /TEXT  subject contains TEXT
    NAME            messages whose sender contains NAME

Deleted messages match only `:d` (and only commands that act on deleted
messages, like `undelete`, see them at all).  Matching is case-insensitive.
"""

import re
import shlex


class MsgListError(Exception):
    """A specification that names no message; the text says which."""


_LIST_WORD = re.compile(r"^(\d+(-\d+)?|[*$.^+-]|:[a-z]+)$")
_RANGE = re.compile(r"^(\d+|[.^$])-(\d+|[.^$])$")
_STATES = {
    "n": lambda m: m.new,
    "o": lambda m: not m.new and not m.read,
    "u": lambda m: not m.read,
    "r": lambda m: m.read,
    "d": lambda m: m.deleted,
    "f": lambda m: m.flagged,
}


def split(text):
    """The words of a command argument; quotes group `"/two words"`."""
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise MsgListError(str(exc)) from None


def is_list_word(word):
    """Whether WORD can only be a message list (a number, range, `*`, `:n`...), never a file or command."""
    return bool(_LIST_WORD.match(word))


def leading_list(text):
    """Split 'N-M :u rest of line' into (['N-M', ':u'], 'rest of line') for `| [LIST] COMMAND`."""
    words = text.split()
    count = 0
    while count < len(words) and is_list_word(words[count]):
        count += 1
    rest = text.strip()
    for word in words[:count]:
        rest = rest[len(word):].lstrip()
    return words[:count], rest


def select(words, messages, current, *, deleted=False):
    """Numbers (1-based, ascending) of the MESSAGES that WORDS name.

    MESSAGES is the folder's list of message states (attributes `deleted`,
    `new`, `read`, `flagged`, `subject`, `sender`); CURRENT the number of
    the current message.  DELETED selects among deleted messages instead,
    for `undelete`.  An empty WORDS means the current message.
    """
    visible = [m.deleted == deleted for m in messages]
    if not words:
        if 1 <= current <= len(messages) and visible[current - 1]:
            return [current]
        raise MsgListError("no applicable messages")
    chosen = set()
    for word in words:
        found = _one(word, messages, current, visible, deleted)
        if not found:
            raise MsgListError(f"no messages match: {word}")
        chosen.update(found)
    return sorted(chosen)


def _one(word, messages, current, visible, deleted):
    count = len(messages)
    numbers = range(1, count + 1)

    def shown(n):
        return visible[n - 1]

    if word == "*":
        return [n for n in numbers if shown(n)]
    if word.isdigit() or word in ".^$":
        n = _position(word, count, current, visible)
        if not 1 <= n <= count:
            raise MsgListError(f"{word}: invalid message number")
        if not shown(n):
            raise MsgListError(f"{n}: {'not' if deleted else 'inappropriate'} deleted message")
        return [n]
    if m := _RANGE.match(word):
        low = _position(m.group(1), count, current, visible)
        high = _position(m.group(2), count, current, visible)
        if not (1 <= low <= high <= count):
            raise MsgListError(f"{word}: invalid range")
        return [n for n in range(low, high + 1) if shown(n)]
    if word in ("+", "-"):
        step = 1 if word == "+" else -1
        n = current + step
        while 1 <= n <= count and not shown(n):
            n += step
        if not 1 <= n <= count:
            raise MsgListError(f"no {'next' if step > 0 else 'previous'} message")
        return [n]
    if word.startswith(":"):
        tests = [_STATES.get(letter) for letter in word[1:].lower()]
        if not tests or None in tests:
            raise MsgListError(f"{word}: unknown message state")
        if word[1:].lower() == "d":
            return [n for n in numbers if messages[n - 1].deleted]
        return [n for n in numbers if shown(n) and any(t(messages[n - 1]) for t in tests)]
    if word.startswith("/"):
        needle = word[1:].lower()
        return [n for n in numbers if shown(n) and needle in messages[n - 1].subject.lower()]
    needle = word.lower()
    return [n for n in numbers if shown(n) and needle in messages[n - 1].sender.lower()]


def _position(token, count, current, visible):
    """A single position: a number, `.` current, `^` first or `$` last visible message."""
    if token.isdigit():
        return int(token)
    if token == ".":
        return current
    ordered = range(1, count + 1) if token == "^" else range(count, 0, -1)
    return next((n for n in ordered if visible[n - 1]), 0)
