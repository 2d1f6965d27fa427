"""Commands that send mail: mail, reply (to all) and Reply (to the sender).

Replies follow mailx: `reply` answers the sender (Reply-To when set) and
every To/Cc recipient except the user, `Reply` the sender alone; the
subject gets one `Re: `, In-Reply-To and References thread the answer, and
the original text is quoted with `indentprefix` under an attribution line.
"""

import email.utils

from .. import compose, mime_view, msglist, tilde
from ..session import CommandError, HangUp


def mail(session, arg):
    to = compose.split_addresses(arg) if "," in arg else msglist.split(arg)
    if not to:
        raise CommandError("mail: usage: mail ADDRESS...")
    compose_and_send(session, compose.Draft(to=to))


def reply_all(session, arg):
    _reply(session, arg, everyone=not session.options.on("flipr"))


def reply_sender(session, arg):
    _reply(session, arg, everyone=session.options.on("flipr"))


def _reply(session, arg, *, everyone):
    m = session.select(msglist.split(arg))[0]
    original = mime_view.parse(session.folder.read(m))
    author = _addresses(original, "Reply-To") or _addresses(original, "From") or [("", m.stored.sender)]
    to, cc, taken = [], [], set()
    me = _my_addresses(session)
    groups = [(author, to)]
    if everyone:
        groups += [(_addresses(original, "To"), to), (_addresses(original, "Cc"), cc)]
    for pairs, target in groups:
        for name, addr in pairs:
            key = addr.lower()
            if key in taken or (key in me and pairs is not author):   # never copy myself, unless I wrote it
                continue
            taken.add(key)
            target.append(email.utils.formataddr((name, addr)))
    subject = mime_view.decode_header(original.get("Subject"))
    if not subject.lower().startswith("re:"):
        subject = "Re: " + subject
    message_id = (original.get("Message-ID") or "").strip()
    references = " ".join(filter(None, [(original.get("References") or "").strip(), message_id]))
    draft = compose.Draft(to=to, cc=cc, subject=subject, in_reply_to=message_id, references=references)
    if session.options.on("quote"):
        draft.body = session.quoted(m, session.options.get("indentprefix", "> "))
    m.mark_read()
    if compose_and_send(session, draft) == SENT:
        m.answered = True                   # kept as X-Status: A, which IMAP clients see as \\Answered


def _addresses(msg, field):
    """(display name, address) pairs of a header, names decoded; parsed before decoding so an
    encoded comma in a name cannot split an address."""
    pairs = email.utils.getaddresses(msg.get_all(field, []))
    return [(mime_view.decode_header(name), addr) for name, addr in pairs if addr]


def _my_addresses(session):
    if session.options.on("metoo"):
        return set()
    name = session.user.name.lower()
    domains = session.cfg.local_domains
    mine = {f"{name}@{d}" for d in domains} | {name}
    mine.update(a.lower() for a in session.options.get("alternates", "").split())
    return mine


# What became of a letter: compose_and_send's answer, which `mail ADDRESS` turns into its exit status.
SENT, EMPTY, ABANDONED, FAILED = "sent", "empty", "abandoned", "failed"


def compose_and_send(session, draft, *, skip_empty=False):
    """Ask for what is missing, collect the body (tilde escapes and all), send; returns an outcome above.

    The questions are asked only on a terminal; commands piped to `mail`
    still compose with `m` and `r`, the body ending at a lone `.`.
    """
    opts = session.options
    ask = session.interactive
    try:
        if ask and not draft.subject and (opts.on("ask") or opts.on("asksub")):
            draft.subject = session.read_line("Subject: ")
        tilde.Composer(draft, session).run()
        if ask and opts.on("askcc"):
            draft.cc = compose.split_addresses(session.read_line("Cc: ", ", ".join(draft.cc)))
        if ask and opts.on("askbcc"):
            draft.bcc = compose.split_addresses(session.read_line("Bcc: ", ", ".join(draft.bcc)))
    except tilde.Abort as abort:
        if abort.save:
            session.save_dead(draft)
            session.write(f"(Letter saved in {session.dead_letter})\n")
        return ABANDONED
    except (EOFError, KeyboardInterrupt):
        session.save_dead(draft)
        return ABANDONED
    except HangUp:
        session.save_dead(draft)
        raise
    if skip_empty and not draft.body.strip() and not draft.attachments:
        session.warn("empty message not sent")
        return EMPTY
    if not draft.recipients():
        session.warn("no recipients specified")
        session.save_dead(draft)
        return FAILED
    return SENT if session.send(draft) else FAILED
