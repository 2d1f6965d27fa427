"""Commands that show mail: print/type, Enter and next, -, top, headers, z, from, =, trace."""

from .. import mime_view, msglist, summary
from ..session import CommandError


def show(session, m, *, all_headers=False):
    """Print one message (paged when long) and mark it read."""
    raw = session.folder.read(m)
    text = mime_view.render(raw, session.options.shows_header, all_headers=all_headers)
    session.page(f"Message {m.number}:\n{text}")
    m.mark_read()
    session.set_current(m)
    session.shown_current = True


def print_messages(session, arg):
    for m in session.select(msglist.split(arg)):
        show(session, m)


def print_all_headers(session, arg):
    for m in session.select(msglist.split(arg)):
        show(session, m, all_headers=True)


def next_message(session, arg):
    """Enter and `n`: the current message if not yet shown, else the next undeleted one."""
    if arg:
        print_messages(session, arg)
        return
    messages = session.folder.messages if session.folder else []
    start = session.current if session.shown_current else session.current - 1
    following = [m for m in messages[max(start, 0):] if not m.deleted]
    if not following:
        raise CommandError("At EOF")
    show(session, following[0])


def previous_message(session, arg):
    messages = session.folder.messages if session.folder else []
    earlier = [m for m in messages[:max(session.current - 1, 0)] if not m.deleted]
    if not earlier:
        raise CommandError("No previous message")
    show(session, earlier[-1])


def top(session, arg):
    count = session.options.number("toplines", 5)
    for m in session.select(msglist.split(arg)):
        text = mime_view.render(session.folder.read(m), session.options.shows_header)
        head, _, body = text.partition("\n\n")
        shown = "\n".join(body.split("\n")[:count])
        session.write(f"Message {m.number}:\n{head}\n\n{shown}\n")
        session.set_current(m)


def size(session, arg):
    for m in session.select(msglist.split(arg)):
        session.write(f"{m.number}: {session.folder.line_count(m)}/{m.size}\n")


def from_(session, arg):
    for m in session.select(msglist.split(arg)):
        session.write(summary.line(session.folder, m, session.current) + "\n")


def page_size(session):
    return max(1, session.options.number("screen", session.screen_rows() - 3))


def headers(session, arg):
    """A page of summary lines: the one holding the current message (or message ARG)."""
    folder = session.folder
    if not folder or not folder.messages:
        raise CommandError("No applicable messages")
    around = session.select(msglist.split(arg))[0].number if arg else session.current
    print_page(session, around)


def print_page(session, around):
    folder = session.folder
    visible = [m for m in folder.messages if not m.deleted]
    if not visible:
        raise CommandError("No applicable messages")
    position = next((i for i, m in enumerate(visible, 1) if m.number >= around), len(visible))
    shown = summary.page_around(len(visible), position, page_size(session))
    session.write("".join(summary.line(folder, visible[i - 1], session.current) + "\n" for i in shown))
    session.page_start = shown.start


def scroll(session, arg):
    """`z` the next page of summary lines, `z-` the previous one."""
    folder = session.folder
    if not folder or not folder.messages:
        raise CommandError("No applicable messages")
    visible = [m for m in folder.messages if not m.deleted]
    step = page_size(session)
    start = session.page_start + (-step if arg.startswith("-") else step)
    if start < 1 or start > len(visible):
        raise CommandError("On first screenful of messages" if start < 1 else "On last screenful of messages")
    print_page(session, visible[start - 1].number)


def show_number(session, arg):
    session.write(f"{session.current}\n")


def list_attachments(session, arg):
    for m in session.select(msglist.split(arg)):
        parts = mime_view.attachments(mime_view.parse(session.folder.read(m)))
        if not parts:
            session.write(f"Message {m.number}: no attachments\n")
        for p in parts:
            session.write(f"Message {m.number}: #{p.number} {p.content_type}, {p.size} bytes"
                          f"{', ' + p.filename if p.filename else ''}\n")


def trace(session, arg):
    """`trace [LIST]`: the hops each message took, as `mailsuite trace` prints them."""
    from ...trace import hops as tracer
    from ...trace import render as trace_render
    for m in session.select(msglist.split(arg)):
        session.page(f"Message {m.number}:\n" + trace_render.text(tracer.trace_message(session.folder.read(m))))
        session.set_current(m)


def incorporate(session, arg):
    """`inc`: take in mail that arrived since start-up, and list it."""
    folder = session.folder
    if folder is None:
        raise CommandError("No folder")
    first = len(folder.messages) + 1
    session.told_new_mail = False
    if not folder.incorporate():
        session.write("No new mail.\n")
        return
    for m in folder.messages[first - 1:]:
        session.write(summary.line(folder, m, session.current) + "\n")
