"""Commands that mark messages for quit: delete, dp, undelete, preserve/hold, mbox, touch."""

from .. import msglist
from . import display


def delete(session, arg):
    _delete(session, arg)
    if session.options.on("autoprint"):
        _print_current(session)


def delete_and_print(session, arg):
    _delete(session, arg)
    _print_current(session)


def _delete(session, arg):
    chosen = session.select(msglist.split(arg))
    for m in chosen:
        m.deleted = True
        m.preserved = False
    _move_past(session, chosen[-1])


def _move_past(session, last):
    """After a delete the current message is the next undeleted one (else the previous)."""
    messages = session.folder.messages
    after = [m for m in messages[last.number:] if not m.deleted]
    before = [m for m in messages[:last.number] if not m.deleted]
    if after:
        session.set_current(after[0])
    elif before:
        session.set_current(before[-1])
        session.shown_current = True


def _print_current(session):
    m = session.folder.messages[session.current - 1] if session.current else None
    if m is None or m.deleted:
        session.write("At EOF\n")
        return
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
        m.read = True
        m.new = False
