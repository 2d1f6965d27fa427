"""Commands that mark messages for quit: delete, dp, undelete, preserve/hold, mbox, touch."""

from .. import msglist
from . import display


def delete(session, arg):
    following = _delete(session, arg)
    if session.options.on("autoprint"):
        _print(session, following)


def delete_and_print(session, arg):
    _print(session, _delete(session, arg))


def _delete(session, arg):
    """Mark the messages deleted; returns the next undeleted message after them, if any.

    The current message becomes that one (else the last undeleted one before).
    """
    chosen = session.select(msglist.split(arg))
    for m in chosen:
        m.deleted = True
        m.preserved = False
    messages = session.folder.messages
    after = [m for m in messages[chosen[-1].number:] if not m.deleted]
    before = [m for m in messages[:chosen[-1].number] if not m.deleted]
    if after:
        session.set_current(after[0])
    elif before:
        session.set_current(before[-1])
        session.shown_current = True
    return after[0] if after else None


def _print(session, m):
    if m is None:
        session.write("At EOF\n")
    else:
        display.show(session, m)


def undelete(session, arg):
    for m in session.select(msglist.split(arg), deleted=True):
        m.deleted = False
        session.set_current(m)


def preserve(session, arg):
    for m in session.select(msglist.split(arg)):
        m.preserved = True
        m.to_mbox = False


def mbox(session, arg):
    for m in session.select(msglist.split(arg)):
        m.to_mbox = True
        m.preserved = False


def touch(session, arg):
    for m in session.select(msglist.split(arg)):
        m.mark_read()
