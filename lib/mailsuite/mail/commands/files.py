"""Commands that put mail in files: save, Save, write, copy, Copy, detach.

`save` and `copy` append whole messages to an mbox file through the store
(locked, fsynced, From_-quoted), so the file reads in mutt and s-nail; a
saved message leaves the spool on quit, a copied one stays.  `write` keeps
only the bodies, `detach` one decoded attachment, byte for byte.

An attachment's name is chosen by whoever sent the message, so `detach`
uses it only once made harmless (`safe_file_name`): no directories, no
control characters, no leading dot, so it lands in the current directory
as a plain visible file and never as ~/.bash_profile.  An existing file is
replaced only when the user answers yes at the terminal, and then whole
(a new file renamed over it); a write that fails leaves no partial file.
"""

import email.utils
import os
import re
import tempfile

from ...core import fileio
from ...store.locking import LockTimeout
from ...store.mailbox import MailboxError
from .. import mime_view, msglist
from ..folder import append_messages
from ..session import CommandError


def _list_and_file(session, arg):
    """`[LIST] FILE`: the last word is the file unless it is the only word and a list."""
    words = msglist.split(arg)
    if not words:
        return session.select([]), session.mbox_path
    if len(words) == 1 and msglist.is_list_word(words[0]):
        return session.select(words), session.mbox_path
    return session.select(words[:-1]), session.expand_path(words[-1])


def _append(session, chosen, path):
    items = [(session.folder.read(m), m.stored, frozenset("RO") if m.read else frozenset("O"))
             for m in chosen]
    existed = os.path.exists(path)
    if path.startswith(session.folder_dir + "/"):
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)   # the folder directory, on first use
    try:
        append_messages(path, session.cfg, session.me, items)
    except OSError as exc:
        raise CommandError(f"{path}: {exc.strerror}") from None
    except (MailboxError, LockTimeout) as exc:
        raise CommandError(str(exc)) from None
    lines = sum(session.folder.line_count(m) for m in chosen)
    size = sum(m.size for m in chosen)
    session.write(f'"{path}" {"[Appended]" if existed else "[New file]"} {lines}/{size}\n')


def save(session, arg):
    chosen, path = _list_and_file(session, arg)
    _append(session, chosen, path)
    _mark_saved(chosen)
    session.set_current(chosen[-1])


def _mark_saved(chosen):
    """Saved messages leave the spool at quit (unless `keepsave`), and count as read."""
    for m in chosen:
        m.saved = True
        m.mark_read()


def copy(session, arg):
    chosen, path = _list_and_file(session, arg)
    _append(session, chosen, path)


def _by_sender(session, arg):
    chosen = session.select(msglist.split(arg))
    login = email.utils.parseaddr(chosen[0].sender)[1].split("@")[0] or "unknown"
    return chosen, session.expand_path(login if "/" not in login else "unknown")


def save_by_sender(session, arg):
    chosen, path = _by_sender(session, arg)
    _append(session, chosen, path)
    _mark_saved(chosen)


def copy_by_sender(session, arg):
    chosen, path = _by_sender(session, arg)
    _append(session, chosen, path)


def write(session, arg):
    """Append the bodies only (as text, decoded) to FILE; the messages count as saved."""
    words = msglist.split(arg)
    if not words:
        raise CommandError("write: file name needed")
    chosen = session.select(words[:-1])
    path = session.expand_path(words[-1])
    size = 0
    with open(path, "ab") as f:
        for m in chosen:
            text = mime_view.body_text(session.folder.read(m))
            data = (text if text.endswith("\n") or not text else text + "\n").encode("utf-8")
            f.write(data)
            size += len(data)
    _mark_saved(chosen)
    session.write(f'"{path}" {size} bytes\n')


def detach(session, arg):
    """detach [MSG] PART [FILE]: save attachment PART, by default under its own name."""
    words = msglist.split(arg)
    numbers = [w for w in words if w.isdigit()]
    if not numbers:
        raise CommandError("detach: usage: detach [MSG] PART [FILE]")
    if len(numbers) >= 2 and words[0].isdigit() and words[1].isdigit():
        m, part_no, rest = session.select([words[0]])[0], int(words[1]), words[2:]
    else:
        m, part_no, rest = session.select([])[0], int(words[0]), words[1:]
    parts = mime_view.attachments(mime_view.parse(session.folder.read(m)))
    if not 1 <= part_no <= len(parts):
        raise CommandError(f"message {m.number} has no attachment #{part_no}")
    part = parts[part_no - 1]
    if rest:
        path = session.expand_path(rest[0])
    else:
        path = os.path.join(os.getcwd(), safe_file_name(part.filename, f"attachment-{m.number}-{part_no}"))
    data = part.message.get_payload(decode=True) or b""
    try:
        try:
            _write_new(path, data)
        except FileExistsError:
            if not os.path.isfile(path) or os.path.islink(path):
                raise CommandError(f"{path}: exists and is not a plain file, not overwritten") from None
            if not session.confirm(f'"{path}" exists; overwrite?'):
                raise CommandError(f"{path}: file exists, not overwritten") from None
            _replace(path, data)
    except OSError as exc:
        raise CommandError(f"{path}: {exc.strerror}, nothing saved") from None
    session.write(f'"{path}" {len(data)} bytes\n')


def safe_file_name(name, fallback):
    """NAME from a message made safe to create in the current directory; FALLBACK when nothing is left.

    Only the last component of a Unix or DOS path is kept, control and other
    invisible characters become '_', and leading dots and blanks go, so the
    result is never a directory, a dotfile or a terminal escape.
    """
    name = re.split(r"[/\\]", name)[-1]
    name = "".join(c if c.isprintable() else "_" for c in name).lstrip(". ").rstrip()
    while len(name.encode("utf-8", "surrogateescape")) > 255:
        name = name[:-1]
    return name or fallback


def _write_new(path, data):
    """Create PATH with DATA, never over an existing file or link; a failed write removes it again."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    _fill_or_remove(fd, path, data)


def _replace(path, data):
    """Put a new file with DATA in place of PATH: whole, or not at all."""
    fd, temporary = tempfile.mkstemp(prefix=".detach-", dir=os.path.dirname(path) or ".")
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)
    _fill_or_remove(fd, temporary, data)
    try:
        os.replace(temporary, path)
    except OSError:
        fileio.unlink_quietly(temporary)
        raise


def _fill_or_remove(fd, path, data):
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError:
        fileio.unlink_quietly(path)
        raise
