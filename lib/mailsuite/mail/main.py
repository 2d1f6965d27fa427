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

import os
import pwd
import signal
import sys

from ..core import config
from ..core.cli import CONFIG_OPTION, CommandLine, Fatal, Option
from ..core.errors import os_error_status
from ..core.users import UserDB
from ..store.locking import LockTimeout
from ..store.mailbox import MailboxError
from . import compose, rc, summary
from .commands import display, send, table
from .folder import Folder
from .session import HangUp, Session

COMMAND_LINE = CommandLine("mail", [
    Option(("-s",), "subject", "subject", metavar="SUBJECT"),
    Option(("-c",), "cc", "carbon copies (comma-separated; repeatable)", metavar="CC", repeat=True),
    Option(("-b",), "bcc", "blind copies (comma-separated; repeatable)", metavar="BCC", repeat=True),
    Option(("-r",), "from", "From: address and envelope sender", metavar="FROM"),
    Option(("-a",), "attach", "attach FILE (repeatable)", metavar="FILE", repeat=True),
    Option(("-E",), "skip_empty", "do not send a message whose body is empty"),
    Option(("-f",), "folder", "read FILE, the first operand (default ~/mbox), instead of the spool"),
    Option(("-H",), "headers_only", "print the header summary and exit"),
    Option(("-e",), "test", "exit 0 if there is mail, 1 if not, printing nothing"),
    Option(("-N",), "no_header", "do not print the header summary on start-up"),
    Option(("-n",), "no_system_rc", "do not read the system start-up file"),
    Option(("-i",), "ignore_interrupts", "ignore interrupts at the prompt"),
    Option(("-v",), "verbose", "verbose: sendmail reports each delivery on the terminal"),
    Option(("-u",), "user", "act as USER (sandbox) / read USER's spool (where permitted)", metavar="USER"),
    CONFIG_OPTION,
], ["[-EiNnv] [-s SUBJECT] [-c CC] [-b BCC] [-r FROM] [-a FILE]... [-C FILE] ADDRESS...",
    "[-eHiNnv] [-u USER] [-C FILE]",
    "[-eHiNnv] [-C FILE] -f [FILE]"],
    "Send mail to ADDRESS... (body on standard input, or typed with ~ escapes),\n"
    "or read your mailbox when no address is given.\n"
    "Type ? at the prompt for the commands, ~? while composing for the escapes.")

SENDING_ONLY = ("subject", "cc", "bcc", "from", "attach", "skip_empty")


def main(argv):
    options, args = COMMAND_LINE.parse(argv[1:], intermix=True)
    if options.get("help"):
        sys.stdout.write(COMMAND_LINE.help())
        return 0
    cfg = config.load(options.get("config"))
    user = resolve_user(cfg, options.get("user"))
    sending = bool(args) and not options.get("folder")
    if sending and (options.get("test") or options.get("headers_only")):
        raise COMMAND_LINE.error("-e and -H read mail; they take no addresses")
    if not sending and any(name in options for name in SENDING_ONLY):
        raise COMMAND_LINE.error("-s, -c, -b, -a, -r and -E need an address")
    variables = rc.Options()
    if options.get("verbose"):
        variables.set(["verbose"])
    me, home = own_account(cfg, user, options.get("user"))
    session = Session(cfg, user, variables, me=me, home=home, interactive=sys.stdin.isatty())
    if not options.get("no_system_rc") and cfg.mail.rc_file:
        rc.load(variables, cfg.mail.rc_file, sending=sending, warn=session.warn)
    rc.load(variables, os.environ.get("MAILRC") or os.path.join(session.home, ".mailrc"),
            sending=sending, warn=session.warn)
    sys.stdin.reconfigure(errors="replace")      # a stray byte in typed text must not end the session
    signal.signal(signal.SIGHUP, _hangup)
    try:
        if sending:
            return send_mode(session, args, options)
        path = session.expand_path(args[0] if args else "~/mbox") if options.get("folder") else user.spool
        return read_mode(session, path, options)
    except HangUp:
        return 1


def resolve_user(cfg, name):
    """Who `mail` acts for: -u USER, else (sandbox) $USER, else the invoking uid's account."""
    userdb = UserDB(cfg)
    if cfg.mailsuite.sandbox:
        user = userdb.lookup(name or os.environ.get("USER") or "")
        if user is None and name:
            raise Fatal(os.EX_NOUSER, f"no such user in the sandbox: {name}")
        if user is None:
            raise Fatal(os.EX_NOUSER, f"{os.environ.get('USER') or 'you'}: not a user of the sandbox; "
                                      "name one with -u USER")
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

def send_mode(session, addresses, options):
    draft = compose.Draft(to=[a for word in addresses for a in compose.split_addresses(word)])
    draft.subject = options.get("subject", "")
    draft.cc = [a for word in options.get("cc", ()) for a in compose.split_addresses(word)]
    draft.bcc = [a for word in options.get("bcc", ()) for a in compose.split_addresses(word)]
    if "from" in options:
        draft.from_addr = options["from"]
        session.options.set([f"from={options['from']}"])
    for path in options.get("attach", ()):
        if not os.access(path, os.R_OK) or os.path.isdir(path):
            raise Fatal(os.EX_NOINPUT, f"{path}: cannot attach: "
                        f"{'is a directory' if os.path.isdir(path) else 'no such readable file'}")
        draft.attachments.append(path)
    skip_empty = bool(options.get("skip_empty"))
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

def read_mode(session, path, options):
    system = os.path.abspath(path) == os.path.abspath(session.user.spool)
    if not system and not os.path.lexists(path):
        raise Fatal(os.EX_NOINPUT, f"{path}: No such file or directory")
    try:
        if options.get("test") or options.get("headers_only"):
            return peek(session, path, system, options)
        folder = session.open_folder(path, system=system)
    except (MailboxError, PermissionError, IsADirectoryError) as exc:
        raise Fatal(os.EX_NOINPUT, _with_path(path, exc)) from None
    except LockTimeout as exc:
        raise Fatal(os.EX_TEMPFAIL, _with_path(path, exc)) from None
    except OSError as exc:
        raise Fatal(os_error_status(exc, os.EX_IOERR), _with_path(path, exc)) from None
    if not folder.messages:
        folder.close()
        session.folder = None
        session.write(f"No mail for {session.user.name}\n" if system else f"{path}: no messages\n")
        return 0
    session.write(session.folder_status() + "\n")
    if not options.get("no_header") and session.options.on("header"):
        display.print_page(session, session.current)
    prompt_loop(session, ignore_interrupts=bool(options.get("ignore_interrupts")))
    return 0


def _with_path(path, exc):
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return text if text.startswith(path) else f"{path}: {text}"


def peek(session, path, system, options):
    """-e and -H: a look at the folder, without the prompt."""
    folder = Folder(path, session.cfg, session.user, system=system).open()
    try:
        if options.get("test"):
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
                table.execute(session, "quit")
                break
            except KeyboardInterrupt:
                session.write("\nInterrupt\n")
                continue
            table.execute(session, line)
    except LockTimeout as exc:
        raise Fatal(os.EX_TEMPFAIL, f"mailbox is locked, nothing changed: {exc}") from None
    finally:
        if session.folder:                      # an error on the way out: leave things as they were
            session.leave_folder(apply=False)


def _hangup(signum, frame):
    """A hang-up keeps the letter being written in ~/dead.letter and leaves the mailbox as it was."""
    raise HangUp()
