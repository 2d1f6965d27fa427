"""The rest of the prompt: options, shell escapes, pipes, folders, help, quit and exit."""

import os
import shlex
import subprocess
import tempfile

from ...store.locking import LockTimeout
from ...store.mailbox import MailboxError
from .. import mime_view, msglist, rc
from ..session import CommandError


def rc_command(name):
    """A prompt command that is also a start-up-file command (set, alias, ignore...)."""
    method = rc.RC_COMMANDS[name]

    def handler(session, arg):
        words = rc.split_words(arg)
        if not words and name == "set":
            for key, value in sorted(session.options.variables.items()):
                session.write(f"{key}={value!r}\n" if value else f"{key}\n")
            return
        if not words and name in ("alias", "group"):
            for key, members in sorted(session.options.aliases.items()):
                session.write(f"{key}\t{' '.join(members)}\n")
            return
        if not words and name in ("ignore", "discard", "retain"):
            shown = session.options.retained if name == "retain" else session.options.ignored
            session.write("".join(f"{h}\n" for h in sorted(shown)))
            return
        method(session.options, words)

    handler.__doc__ = f"`{name}` at the prompt"
    return handler


def source(session, arg):
    """`source FILE`: read a start-up file now (set, alias, ignore... lines)."""
    if not arg:
        raise CommandError("source: file name needed")
    path = session.expand_path(arg)
    if not os.path.isfile(path):
        raise CommandError(f"{path}: No such file")
    rc.load(session.options, path, sending=False, warn=session.warn)


def shell(session, arg):
    subprocess.run(["/bin/sh", "-c", arg] if arg else [os.environ.get("SHELL", "/bin/sh")])
    session.write("!\n")


def pipe(session, arg):
    """| [LIST] COMMAND: each message as `print` shows it (headers filtered, text decoded) on its input."""
    _pipe(session, arg, lambda raw: mime_view.render(raw, session.options.shows_header).encode(
        mime_view.terminal_encoding(), "replace"))


def pipe_raw(session, arg):
    """Pipe [LIST] COMMAND: each message exactly as it was sent, for programs that parse mail."""
    _pipe(session, arg, lambda raw: raw)


def _pipe(session, arg, content):
    words, command = msglist.leading_list(arg)
    if len(command) > 1 and command[0] in "'\"" and command[-1] == command[0]:
        command = command[1:-1]
    if not command:
        raise CommandError("pipe: usage: | [LIST] COMMAND")
    chosen = session.select(words)
    for m in chosen:
        done = subprocess.run(["/bin/sh", "-c", command], input=content(session.folder.read(m)))
        if done.returncode != 0:
            session.warn(f"{command}: exit status {done.returncode}")
        m.mark_read()
    session.set_current(chosen[-1])


def edit_message(session, arg):
    """View a message in the editor; the folder itself is never changed by it."""
    editor = session.options.get("VISUAL") or os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    for m in session.select(msglist.split(arg)):
        with tempfile.NamedTemporaryFile(prefix="mail.", suffix=".eml") as f:
            f.write(session.folder.read(m))
            f.flush()
            subprocess.run(shlex.split(editor) + [f.name])
        m.mark_read()


def chdir(session, arg):
    os.chdir(session.expand_path(arg) if arg else session.home)


def folder(session, arg):
    if not arg:
        session.write(session.folder_status() + "\n")
        return
    session.switch_folder(session.expand_path(arg))


def folders(session, arg):
    directory = session.folder_dir
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise CommandError(f"{directory}: {exc.strerror}") from None
    session.write("".join(f"{n}\n" for n in names))


def quit_(session, arg):
    path = session.folder.path if session.folder else "mailbox"
    try:
        session.leave_folder(apply=True)
    except (LockTimeout, MailboxError) as exc:
        raise CommandError(f"{exc}; nothing changed (quit again, or exit)") from None
    except OSError as exc:                      # ENOSPC for a crash record beside the spool names no file
        raise CommandError(f"{exc.filename or path}: {exc.strerror}; nothing changed "
                           f"(quit again, or exit)") from None
    session.done = True


def exit_(session, arg):
    session.leave_folder(apply=False)
    session.done = True
