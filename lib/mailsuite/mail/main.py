"""mail — send and read mail, with the habits of BSD mailx and s-nail.

    mail [-EiNn] [-s SUBJECT] [-c CC] [-b BCC] [-r FROM] [-a FILE]... ADDRESS...
    mail [-eHiNn] [-u USER]
    mail [-eHiNn] -f [FILE]

With addresses it sends: the body comes from standard input, or from the
terminal with tilde escapes, and goes to the configured sendmail.  Without
them it reads the user's spool (or FILE, default ~/mbox): a header summary
and the `?` prompt.  It runs with the user's own permissions: the spool is
read and written through the store's locks as the user, and another
user's spool is readable only where the file's permissions say so.

Exit status: 0, or a sysexits code with one line on stderr (EX_USAGE for
bad options, EX_NOUSER for an unknown -u user, EX_NOINPUT for an
unreadable folder or attachment, EX_UNAVAILABLE when sendmail failed:
the letter is then in ~/dead.letter, EX_TEMPFAIL when the mailbox stays
locked, the disk is full or the mailbox waits for an interrupted change to
be finished).  1 means no mail (`-e`) or a letter abandoned at the terminal.
"""

import errno
import getopt
import os
import pwd
import signal
import sys

from .. import config
from ..cli import Fatal
from ..locking import LockTimeout
from ..mbox import MailboxError
from ..users import UserDB
from . import commands, compose, rc, summary
from .commands import send
from .folder import Folder
from .session import HangUp, Session

USAGE = """usage: mail [-EiNn] [-s SUBJECT] [-c CC] [-b BCC] [-r FROM] [-a FILE]... ADDRESS...
       mail [-eHiNn] [-u USER] [-f [FILE]]"""
HELP = USAGE + """

Send mail to ADDRESS... (body on standard input, or typed with ~ escapes),
or read your mailbox when no address is given.
  -s SUBJECT  subject            -c CC      carbon copies (comma-separated)
  -b BCC      blind copies       -r FROM    From: address and envelope sender
  -a FILE     attach FILE (repeatable)     -E  do not send an empty message
  -f [FILE]   read FILE (default ~/mbox) instead of the spool
  -H          print the header summary and exit
  -e          exit 0 if there is mail, 1 if not, printing nothing
  -N          do not print the header summary on start-up
  -n          do not read the system start-up file
  -i          ignore interrupts at the prompt
  -u USER     act as USER (sandbox) / read USER's spool (where permitted)
  -C FILE     configuration file (default $MAILSUITE_CONFIG or /etc/mailsuite/mailsuite.conf)
Type ? at the prompt for the commands, ~? while composing for the escapes.
"""


def main(argv):
    try:
        opts, args = getopt.gnu_getopt(argv[1:], "s:c:b:r:a:EfHeNnivu:C:h", ["help"])
    except getopt.GetoptError as exc:
        raise Fatal(os.EX_USAGE, f"{exc}\n{USAGE}") from None
    flags = {name for name, _ in opts}
    if "-h" in flags or "--help" in flags:
        sys.stdout.write(HELP)
        return 0
    value = {name: arg for name, arg in opts}
    cfg = config.load(value.get("-C"))
    user = resolve_user(cfg, value.get("-u"))
    sending = bool(args) and "-f" not in flags
    reading_only = flags & {"-e", "-H"}
    if sending and reading_only:
        raise Fatal(os.EX_USAGE, f"-e and -H read mail; they take no addresses\n{USAGE}")
    if not sending and flags & {"-s", "-c", "-b", "-a", "-r", "-E"}:
        raise Fatal(os.EX_USAGE, f"-s, -c, -b, -a, -r and -E need an address\n{USAGE}")
    options = rc.Options()
    me, home = own_account(cfg, user, value.get("-u"))
    session = Session(cfg, user, options, me=me, home=home, interactive=sys.stdin.isatty())
    if "-n" not in flags and cfg.mail.rc_file:
        rc.load(options, cfg.mail.rc_file, sending=sending, warn=session.warn)
    rc.load(options, os.environ.get("MAILRC") or os.path.join(session.home, ".mailrc"),
            sending=sending, warn=session.warn)
    sys.stdin.reconfigure(errors="replace")      # a stray byte in typed text must not end the session
    signal.signal(signal.SIGHUP, _hangup)
    try:
        if sending:
            return send_mode(session, args, opts, "-E" in flags)
        path = session.expand_path(args[0] if args else "~/mbox") if "-f" in flags else user.spool
        return read_mode(session, path, flags)
    except HangUp:
        return 1


def resolve_user(cfg, name):
    """Who `mail` acts for: -u USER, else (sandbox) $USER, else the invoking uid's account."""
    userdb = UserDB(cfg)
    if cfg.mailsuite.sandbox:
        name = name or os.environ.get("USER") or ""
        user = userdb.lookup(name)
        if user is None:
            raise Fatal(os.EX_NOUSER, f"no sandbox user {name!r}: give -u USER")
        return user
    if name:
        user = userdb.lookup(name)
        if user is None:
            raise Fatal(os.EX_NOUSER, f"no such user: {name}")
        return user
    user = userdb.by_uid(os.getuid())
    if user is None:
        raise Fatal(os.EX_NOUSER, f"uid {os.getuid()} has no account")
    return user


def own_account(cfg, user, explicit_user):
    """(account, home) for personal files: ~/mbox, folders, ~/dead.letter, ~/.mailrc.

    In the sandbox that is the user acted for.  In system mode it is the
    invoking account, with $HOME as mailx uses it, even when -u reads
    someone else's spool (account None when the uid has no entry).
    """
    if cfg.mailsuite.sandbox:
        return user, user.home
    if not explicit_user:
        return user, os.environ.get("HOME") or user.home
    me = UserDB(cfg).by_uid(os.getuid())
    return me, os.environ.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir


# --- sending ---------------------------------------------------------------

def send_mode(session, addresses, opts, skip_empty):
    draft = compose.Draft(to=[a for word in addresses for a in compose.split_addresses(word)])
    for name, arg in opts:
        if name == "-s":
            draft.subject = arg
        elif name == "-c":
            draft.cc += compose.split_addresses(arg)
        elif name == "-b":
            draft.bcc += compose.split_addresses(arg)
        elif name == "-r":
            draft.from_addr = arg
            session.options.set([f"from={arg}"])
        elif name == "-a":
            if not os.access(arg, os.R_OK) or os.path.isdir(arg):
                raise Fatal(os.EX_NOINPUT, f"{arg}: cannot attach: "
                            f"{'is a directory' if os.path.isdir(arg) else 'no such readable file'}")
            draft.attachments.append(arg)
    try:
        compose.check(draft)
    except compose.DraftError as exc:
        raise Fatal(os.EX_USAGE, str(exc)) from None
    if not session.interactive:
        data = sys.stdin.buffer.read()
        try:
            draft.body = data.decode("utf-8")
        except UnicodeDecodeError:
            draft.body = data.decode("latin-1")
        if skip_empty and not draft.body.strip() and not draft.attachments:
            return 0
        if not session.send(draft):
            return os.EX_UNAVAILABLE
        return 0
    outcome = send.compose_and_send(session, draft, skip_empty=skip_empty)
    return {send.SENT: 0, send.EMPTY: 0, send.ABANDONED: 1, send.FAILED: os.EX_UNAVAILABLE}[outcome]


# --- reading ---------------------------------------------------------------

def read_mode(session, path, flags):
    system = os.path.abspath(path) == os.path.abspath(session.user.spool)
    if not system and not os.path.lexists(path):
        raise Fatal(os.EX_NOINPUT, f"{path}: No such file or directory")
    try:
        if flags & {"-e", "-H"}:
            return peek(session, path, system, flags)
        folder = session.open_folder(path, system=system)
    except (MailboxError, PermissionError, IsADirectoryError) as exc:
        raise Fatal(os.EX_NOINPUT, _with_path(path, exc)) from None
    except LockTimeout as exc:
        raise Fatal(os.EX_TEMPFAIL, _with_path(path, exc)) from None
    except OSError as exc:
        raise Fatal(os.EX_TEMPFAIL if exc.errno in TEMPORARY_ERRNOS else os.EX_IOERR, _with_path(path, exc)) from None
    if not folder.messages:
        folder.close()
        session.folder = None
        session.write(f"No mail for {session.user.name}\n" if system else f"{path}: no messages\n")
        return 0
    session.write(session.folder_status() + "\n")
    if "-N" not in flags and session.options.on("header"):
        commands.display.print_page(session, session.current)
    prompt_loop(session, ignore_interrupts="-i" in flags)
    return 0


# Failures of the mail storage that may pass: the user is told to try again, not that the file is bad.
TEMPORARY_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EAGAIN}


def _with_path(path, exc):
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return text if text.startswith(path) else f"{path}: {text}"


def peek(session, path, system, flags):
    """-e and -H: a look at the folder, without the prompt."""
    folder = Folder(path, session.cfg, session.user, system=system).open()
    try:
        if "-e" in flags:
            return 0 if folder.messages else 1
        current = next((m.number for m in folder.messages if m.new), 0)
        width = summary.terminal_width()
        out = "".join(summary.line(folder, m, current, width) + "\n" for m in folder.messages)
        session.write(out)
        return 0
    finally:
        folder.close()


def prompt_loop(session, *, ignore_interrupts):
    """The `?` prompt until quit, exit or end of input (which quits, unless ignoreeof)."""
    if ignore_interrupts:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        while not session.done:
            if session.folder and session.folder.system and session.folder.changed() and not session.told_new_mail:
                session.write("New mail has arrived (inc shows it).\n")
                session.told_new_mail = True
            try:
                line = session.read_line(session.options.get("prompt", "? "))
            except EOFError:
                if session.options.on("ignoreeof"):
                    session.write("\nUse \"quit\" to quit.\n")
                    continue
                session.write("\n")
                commands.execute(session, "quit")
                break
            except KeyboardInterrupt:
                session.write("\nInterrupt\n")
                continue
            commands.execute(session, line)
    except LockTimeout as exc:
        raise Fatal(os.EX_TEMPFAIL, f"mailbox is locked, nothing changed: {exc}") from None
    finally:
        if session.folder:                      # an error on the way out: leave things as they were
            session.leave_folder(apply=False)


def _hangup(signum, frame):
    """A hang-up keeps the letter being written in ~/dead.letter and leaves the mailbox as it was."""
    raise HangUp()
