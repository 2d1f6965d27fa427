"""The command table of the `?` prompt, as in mailx's cmdtab.c.

Each entry names a command, its handler and one line of help.  A word at
the prompt selects the first entry, in table order, that it abbreviates,
which is how `p` means print, `s` save and `R` Reply; the order below is
the order mailx users' fingers rely on.  `!cmd` and `|cmd` need no space.
Handlers take (session, argument text) and report problems by raising
CommandError or msglist.MsgListError, both printed as one line.
"""

import re
import shutil
import textwrap
from dataclasses import dataclass

from ...store.locking import LockTimeout
from ...store.mailbox import MailboxError
from .. import msglist, rc
from ..session import CommandError
from . import display, files, marks, misc, send


@dataclass(frozen=True)
class Command:
    name: str
    handler: object
    help: str


def help_(session, arg):
    """`help` (or `?`): every command, paged; `help CMD`: what CMD does, and the other names it has.

    It reads TABLE below, which names it: the two live in one module."""
    if arg:
        command = lookup(arg.split()[0])
        if command is None:
            raise CommandError(f"help: no command {arg.split()[0]!r}; type ? for the list")
        names = [c.name for c in TABLE if c.handler is command.handler]
        session.write(f"{command.name}: {command.help}\n")
        if len(names) > 1:
            session.write(f"  also: {', '.join(n for n in names if n != command.name)}\n")
        return
    seen, lines = set(), []
    for command in TABLE:
        if command.handler in seen and command.name not in ("?",):
            continue
        seen.add(command.handler)
        lines.append(f"{command.name:<12} {command.help}")
    session.page("\n".join(lines) + "\nA message list is: N, N-M, *, ^, $, ., :n :u :r :o :d :f, /subject, sender\n"
                 "help COMMAND tells more about one command.\n")


def list_commands(session, arg):
    """Every command name, filled to the terminal's width (never split inside a name)."""
    width = max(20, shutil.get_terminal_size((80, 24)).columns - 1)
    session.write(textwrap.fill(" ".join(c.name for c in TABLE), width, break_long_words=False,
                                break_on_hyphens=False) + "\n")


TABLE = [
    Command("next", display.next_message, "go to and print the next message"),
    Command("alias", misc.rc_command("alias"), "define an alias: alias NAME ADDRESS..."),
    Command("print", display.print_messages, "print messages"),
    Command("type", display.print_messages, "print messages"),
    Command("Print", display.print_all_headers, "print messages with every header"),
    Command("Type", display.print_all_headers, "print messages with every header"),
    Command("visual", misc.edit_message, "view a message in $VISUAL"),
    Command("edit", misc.edit_message, "view a message in $EDITOR"),
    Command("top", display.top, "print the first lines of messages"),
    Command("touch", marks.touch, "mark messages read, for ~/mbox"),
    Command("preserve", marks.preserve, "keep messages in the spool"),
    Command("delete", marks.delete, "delete messages"),
    Command("dp", marks.delete_and_print, "delete, then print the next message"),
    Command("dt", marks.delete_and_print, "delete, then print the next message"),
    Command("undelete", marks.undelete, "undelete messages"),
    Command("unset", misc.rc_command("unset"), "unset options"),
    Command("mail", send.mail, "compose a message: mail ADDRESS..."),
    Command("mbox", marks.mbox, "move messages to ~/mbox on quit"),
    Command("more", display.print_messages, "print messages"),
    Command("reply", send.reply_all, "reply to the sender and all recipients"),
    Command("Reply", send.reply_sender, "reply to the sender only"),
    Command("respond", send.reply_all, "reply to the sender and all recipients"),
    Command("Respond", send.reply_sender, "reply to the sender only"),
    Command("retain", misc.rc_command("retain"), "show only these headers"),
    Command("save", files.save, "append messages to a file: save [LIST] FILE"),
    Command("Save", files.save_by_sender, "save messages to a file named after the sender"),
    Command("set", misc.rc_command("set"), "set or list options"),
    Command("shell", misc.shell, "start a shell"),
    Command("source", misc.source, "read a start-up file: source FILE"),
    Command("size", display.size, "print the size of messages"),
    Command("write", files.write, "write message bodies to a file"),
    Command("copy", files.copy, "append messages to a file, without marking them saved"),
    Command("Copy", files.copy_by_sender, "copy messages to a file named after the sender"),
    Command("chdir", misc.chdir, "change directory"),
    Command("cd", misc.chdir, "change directory"),
    Command("from", display.from_, "print summary lines of messages"),
    Command("file", misc.folder, "switch to another folder"),
    Command("folder", misc.folder, "switch to another folder"),
    Command("folders", misc.folders, "list the folder directory"),
    Command("headers", display.headers, "print a page of summary lines"),
    Command("help", help_, "this list"),
    Command("hold", marks.preserve, "keep messages in the spool"),
    Command("group", misc.rc_command("group"), "define an alias: group NAME ADDRESS..."),
    Command("ignore", misc.rc_command("ignore"), "hide these headers when printing"),
    Command("discard", misc.rc_command("discard"), "hide these headers when printing"),
    Command("unignore", misc.rc_command("unignore"), "stop hiding headers"),
    Command("unretain", misc.rc_command("unretain"), "stop retaining headers"),
    Command("unalias", misc.rc_command("unalias"), "remove aliases"),
    Command("z", display.scroll, "next page of summary lines (z- previous)"),
    Command("quit", misc.quit_, "quit, applying changes"),
    Command("xit", misc.exit_, "quit, leaving the mailbox as it was"),
    Command("exit", misc.exit_, "quit, leaving the mailbox as it was"),
    Command("list", list_commands, "list the commands"),
    Command("inc", display.incorporate, "take in mail that arrived since start-up"),
    Command("newmail", display.incorporate, "take in mail that arrived since start-up"),
    Command("attachments", display.list_attachments, "list a message's attachments"),
    Command("trace", display.trace, "the hops messages took, from their Received: lines"),
    Command("detach", files.detach, "save an attachment: detach [MSG] PART [FILE]"),
    Command("pipe", misc.pipe, "pipe messages, as printed, to a command: | [LIST] COMMAND"),
    Command("Pipe", misc.pipe_raw, "pipe messages, as sent, to a command: Pipe [LIST] COMMAND"),
    Command("=", display.show_number, "print the current message number"),
    Command("-", display.previous_message, "go to and print the previous message"),
    Command("+", display.next_message, "go to and print the next message"),
    Command("?", help_, "this list"),
    Command("!", misc.shell, "run a shell command"),
    Command("|", misc.pipe, "pipe messages to a command"),
]

_EXACT = {c.name: c for c in TABLE}


def lookup(word):
    """The command WORD names: exact name first, else the first abbreviation in table order."""
    if word in _EXACT:
        return _EXACT[word]
    if word == "z-":
        return _EXACT["z"]
    return next((c for c in TABLE if c.name.startswith(word)), None)


def split_command(line):
    """'p 1-3' -> ('p', '1-3'); '!ls' -> ('!', 'ls'); '3' -> ('print', '3')."""
    line = line.strip()
    if line[:1] in "!|":
        return line[0], line[1:].strip()
    if line.startswith("z-"):
        return "z", "-" + line[2:]
    if line[:1] in "=-+?":
        return line[0], line[1:].strip()
    word = re.match(r"[A-Za-z]*", line).group()
    if not word:                    # a bare message list: print those messages
        return "print", line
    return word, line[len(word):].strip()


def execute(session, line):
    """Run one command line; errors are printed, never raised."""
    if not line.strip():
        display.next_message(session, "")
        return
    word, arg = split_command(line)
    command = lookup(word)
    if command is None:
        session.warn(f"unknown command: \"{word}\"")
        return
    try:
        command.handler(session, arg)
    except (CommandError, msglist.MsgListError, rc.RcError, MailboxError, LockTimeout) as exc:
        session.warn(str(exc))
    except OSError as exc:
        session.warn(f"{exc.filename or word}: {exc.strerror}")
    except Exception as exc:       # a bug must not cost the user the session's deletions and saves
        session.warn(f"{command.name}: internal error: {type(exc).__name__}: {exc}")
