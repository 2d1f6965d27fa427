"""sendmail(8): the submission command, and the front door of the MTA.

Local programs pipe mail to `sendmail`; it drops the message into the
maildrop (dropdir.py) and exits 0 only once the drop file is fsynced.
The flags are those real callers use, parsed the way Postfix's
sendmail(1) does: historical flags and unknown -o options are accepted and
ignored, -t takes recipients from the header and removes Bcc:, -i/-oi turn
off the lone-dot terminator, -f/-r set the sender, -F the full name,
-N/-R/-V the DSN options.  The other modes: -bp (mailq), -bi (newaliases),
-bv (verify), -q (run the queue), -bd/-bD (the daemon), -bs (SMTP on
stdin).  Invoked as `mailq` it is -bp; as `newaliases`, -bi.

Security: a recipient or sender that starts with '-' (an option smuggled
past a caller's argument list) or holds CR, LF or NUL is refused before
anything is written; this program never runs a shell or another program.

Without a running queue runner, and when it may write the queue (as root,
or in the sandbox), sendmail picks up its own message and makes the first
delivery attempt itself: in the background by default (-odb), before
exiting with -odi, not at all with -odq.
"""

import os
import sys

from ..core import address as addr
from ..core import config, users
from ..core.cli import CONFIG_OPTION, CommandLine, Fatal, Option, program_name

# Historical options, accepted and ignored as Postfix does: with a value, and without.
IGNORED_WITH_VALUE = set("ABLOXehp")
IGNORED_FLAGS = set("GUcmnx")
IGNORED = IGNORED_WITH_VALUE | IGNORED_FLAGS

# The Postfix-compatible grammar (-bX modes, -qX runs, -oX options, values
# attached or apart) is parsed by parse() below; these tables are what
# --help shows and what the manual pages are checked against.
SENDMAIL = CommandLine("sendmail", [
    CONFIG_OPTION,
    Option(("-t",), "extract", "take the recipients from To:, Cc: and Bcc: (and remove Bcc:)"),
    Option(("-i",), "dots", "a line with only '.' does not end the message (also -oi)"),
    Option(("-v",), "verbose", "report the delivery on standard error"),
    Option(("-f",), "sender", "envelope sender (a user who is not trusted gets a warning header)",
           metavar="SENDER"),
    Option(("-r",), "sender", "the same as -f", metavar="SENDER"),
    Option(("-F",), "full_name", "the sender's full name, for a From: we add", metavar="NAME"),
    Option(("-N",), "notify", "DSN: never, or success,failure,delay", metavar="DSN"),
    Option(("-R",), "ret", "DSN: hdrs or full", metavar="RET"),
    Option(("-V",), "envid", "DSN envelope id", metavar="ENVID"),
    Option(("-o",), "option", "i (as -i), di/db/dq (deliver now, in the background, queue only), "
           "AFILE (another aliases file); other -oX are ignored", metavar="X"),
    Option(("-b",), "mode", "p (mailq), i (newaliases), v ADDRESS... (verify), s (SMTP on stdin), "
           "d (daemon), D (daemon in the foreground), m (submit, the default)", metavar="MODE"),
    Option(("-q",), "queue_run", "flush the queue; -qINTERVAL runs the queue runner; -qIID, -qRSTRING, "
           "-qSSTRING flush the messages whose id, a recipient or the sender contains the string",
           metavar="[INTERVAL]"),
    Option(("-I",), "newaliases", "the same as -bi"),
], ["[-C FILE] [-t] [-i] [-v] [-f SENDER] [-r SENDER] [-F NAME] [-N DSN] [-R RET] [-V ENVID] [-o X]... "
    "[--] [RECIPIENT...]",
    "[-C FILE] -b MODE | -q[INTERVAL] | -qIID | -qRSTRING | -qSSTRING | -I"],
    "Reads a message on standard input and queues it for delivery (see sendmail(8)).\n"
    "Also accepted and ignored, as by Postfix: " + ", ".join(f"-{c}" for c in sorted(IGNORED)) + ".")

MAILQ = CommandLine("mailq", [CONFIG_OPTION], ["[-C FILE]"], "List the mail queue (sendmail -bp).")
NEWALIASES = CommandLine("newaliases", [CONFIG_OPTION], ["[-C FILE]"],
                         "Compile the aliases file into its database (sendmail -bi).")

# Option letters that take a value (attached or as the next argument), and
# those that do not; anything else is a usage error.  -q and -b are special.
WITH_VALUE = set("CFNRVfor") | IGNORED_WITH_VALUE
FLAGS = set("Iitv") | IGNORED_FLAGS
MODES = {"m": "submit", "p": "mailq", "i": "newaliases", "v": "verify", "s": "smtp",
         "d": "daemon", "D": "foreground", "h": "noop", "H": "noop"}
NOTIFY_WORDS = {"SUCCESS", "FAILURE", "DELAY"}


class Options:
    def __init__(self):
        self.mode = "submit"
        self.config = None
        self.sender = None           # None: the invoking user
        self.full_name = None
        self.extract = False         # -t
        self.dots = True             # a lone "." ends the input unless -i / -oi
        self.delivery = "b"          # -odb (default), -odi, -odq
        self.queue_run = None        # -q: "" run once, "30m" interval, "Ixxx" "Rxxx" "Sxxx" selections
        self.notify = None
        self.ret = None
        self.envid = None
        self.aliases = None          # -oAFILE
        self.verbose = False


def parse(argv):
    """(Options, recipient arguments) from the command line, Postfix-compatible."""
    opts = Options()
    name = program_name(argv[0] if argv else None)
    if name == "mailq":
        opts.mode = "mailq"
    elif name == "newaliases":
        opts.mode = "newaliases"
    args = list(argv[1:])
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return opts, args[i + 1:]
        if arg in ("--help", "-help", "-?"):
            opts.mode = "help"
            return opts, []
        if not arg.startswith("-") or arg == "-":
            return opts, args[i:]
        j = 1
        while j < len(arg):
            letter = arg[j]
            if letter in FLAGS:
                _flag(opts, letter)
                j += 1
                continue
            if letter == "q":
                opts.queue_run = arg[j + 1:]
                break
            if letter == "b" or letter in WITH_VALUE:
                value = arg[j + 1:]
                if not value:
                    i += 1
                    if i >= len(args):
                        raise Fatal(os.EX_USAGE, f"option -{letter} needs a value")
                    value = args[i]
                _valued(opts, letter, value)
                break
            raise Fatal(os.EX_USAGE, f"unknown option -{letter} (see sendmail --help)")
        i += 1
    return opts, []


def _flag(opts, letter):
    if letter == "t":
        opts.extract = True
    elif letter == "i":
        opts.dots = False
    elif letter == "I":
        opts.mode = "newaliases"
    elif letter == "v":
        opts.verbose = True
    # IGNORED_FLAGS: historical, ignored as Postfix does


def _valued(opts, letter, value):
    if letter == "b":
        if value[:1] not in MODES or len(value) != 1:
            raise Fatal(os.EX_USAGE, f"unsupported mode -b{value}")
        opts.mode = MODES[value]
    elif letter == "C":
        opts.config = value
    elif letter in "fr":
        opts.sender = _sender(value)
    elif letter == "F":
        if not value.isprintable() or len(value) > 256:
            raise Fatal(os.EX_DATAERR, "full name: at most 256 printable characters")
        opts.full_name = value
    elif letter == "N":
        words = {w.strip().upper() for w in value.split(",") if w.strip()}
        if words != {"NEVER"} and not (words and words <= NOTIFY_WORDS):
            raise Fatal(os.EX_USAGE, f"-N {value}: expected never, or success,failure,delay")
        opts.notify = ",".join(sorted(words))
    elif letter == "R":
        if value.lower() not in ("hdrs", "full"):
            raise Fatal(os.EX_USAGE, f"-R {value}: expected hdrs or full")
        opts.ret = value.upper()
    elif letter == "V":
        if not value.isprintable() or not value.isascii() or len(value) > 100:
            raise Fatal(os.EX_USAGE, "-V: the envelope id must be printable ASCII")
        opts.envid = value
    elif letter == "o":
        _option(opts, value)
    # IGNORED_WITH_VALUE: accepted and ignored (-X names a log file: never written)


def _option(opts, value):
    """-oX: the few sendmail options that still mean something."""
    if value == "i":
        opts.dots = False
    elif value.startswith("d") and value[1:2] in ("i", "b", "q", "d"):
        opts.delivery = {"d": "q"}.get(value[1], value[1])
    elif value.startswith("A") and len(value) > 1:
        opts.aliases = value[1:]
    # -oem -oee -oep -oeq -oew, -om, -oQ..., anything else: ignored


def _no_controls(value, what):
    if any(c in value for c in "\r\n\0"):
        raise Fatal(os.EX_DATAERR, f"{what} contains CR, LF or NUL")


def _sender(value):
    _no_controls(value, "sender")
    value = addr.strip_brackets(value)
    if value.startswith("-"):
        raise Fatal(os.EX_USAGE, f"sender starts with '-': {value!r}")
    try:
        return addr.check(value, what="sender") if value else ""
    except addr.AddressError as exc:
        raise Fatal(os.EX_DATAERR, str(exc)) from None


def recipients_of(arguments):
    """Addresses from the command line; each argument may hold a comma list."""
    found = []
    for arg in arguments:
        if arg.startswith("-"):
            raise Fatal(os.EX_USAGE, f"recipient starts with '-': {arg!r}")
        _no_controls(arg, "recipient")
        try:
            found.extend(addr.parse_list(arg))
        except addr.AddressError as exc:
            raise Fatal(os.EX_DATAERR, str(exc)) from None
    for rcpt in found:
        if rcpt.startswith("-"):
            raise Fatal(os.EX_USAGE, f"recipient starts with '-': {rcpt!r}")
    return found


def main(argv):
    opts, arguments = parse(argv)
    if opts.mode == "help":
        name = program_name(argv[0] if argv else None)
        print({"mailq": MAILQ, "newaliases": NEWALIASES}.get(name, SENDMAIL).help(), end="")
        return 0
    cfg = config.load(opts.config)
    if opts.aliases:
        cfg.queue.aliases = opts.aliases
    if opts.mode == "noop":
        return 0
    if opts.mode in ("daemon", "foreground"):
        return _daemon(cfg, opts)
    if opts.mode == "mailq":
        from .showq import show
        _queue_access(cfg, write=False)
        return show(cfg, sys.stdout)
    if opts.mode == "newaliases":
        return _newaliases(cfg)
    if opts.mode == "verify":
        return _verify(cfg, recipients_of(arguments))
    if opts.mode == "smtp":
        from .smtp.daemon import smtp_on_stdio
        from .submit import drop_submitter, may_write_queue
        return smtp_on_stdio(cfg, users.login_name(), submit=None if may_write_queue(cfg) else drop_submitter(cfg))
    if opts.queue_run is not None:
        return _queue_run(cfg, opts)
    from .submit import submit
    return submit(cfg, opts, recipients_of(arguments))


def _daemon(cfg, opts):
    from .smtp.daemon import serve
    _queue_access(cfg, write=True)
    if opts.queue_run:
        cfg.queue.run_interval = _interval(opts.queue_run)
    return serve(cfg, foreground=opts.mode == "foreground")


def _interval(text):
    try:
        return config.parse_duration(text)
    except ValueError:
        raise Fatal(os.EX_USAGE, f"-q{text}: not an interval (e.g. -q30m)") from None


def _queue_access(cfg, *, write):
    """One line and EX_NOPERM for a user who may not see or run the queue."""
    from .queue import Queue
    Queue(cfg).check_access(write=write)


def _queue_run(cfg, opts):
    from ..core import log
    from .queue import Queue
    from .runner import flush, run_forever
    _queue_access(cfg, write=True)
    logger = log.setup(cfg, "sendmail")
    selector, value = opts.queue_run[:1], opts.queue_run[1:]
    if not opts.queue_run:
        return flush(cfg, logger)               # as Postfix's: all of the queue, due or not
    if selector in ("I", "R", "S"):
        if not value:
            raise Fatal(os.EX_USAGE, f"-q{selector} needs a string")
        queue = Queue(cfg)
        chosen = [env.id for env in queue.envelopes(("incoming", "deferred")) if _selected(env, selector, value)]
        return flush(cfg, logger, ids=chosen)
    run_forever(cfg, logger, interval=_interval(opts.queue_run))
    return 0


def _selected(env, selector, value):
    value = value.lower()
    if selector == "I":
        return value in env.id.lower()
    if selector == "S":
        return value in env.sender.lower()
    return any(value in r.lower() for r in env.recipients)


def _newaliases(cfg):
    from .aliases import AliasError, compile
    path = cfg.queue.aliases
    try:
        count, longest, total = compile(path)
    except FileNotFoundError:
        raise Fatal(os.EX_NOINPUT, f"{path}: no such file") from None
    except AliasError as exc:
        raise Fatal(os.EX_DATAERR, str(exc)) from None
    except OSError as exc:
        raise Fatal(os.EX_CANTCREAT, f"{path}.db: {exc.strerror}") from None
    print(f"{path}: {count} aliases, longest {longest} bytes, {total} bytes total")
    return 0


def _verify(cfg, recipients):
    from .routing import RouteError, Router
    if not recipients:
        raise Fatal(os.EX_USAGE, "-bv needs addresses to verify")
    router = Router(cfg)
    origin = addr.origin_domain(cfg)
    status = 0
    for rcpt in recipients:
        rcpt = addr.qualify(rcpt, origin)
        try:
            targets = router.resolve(rcpt)
        except RouteError as exc:
            print(f"{rcpt}... deferred: {exc.reason}")
            status = status or os.EX_TEMPFAIL
            continue
        for target in targets:
            if target.kind == "error":
                print(f"{rcpt}... undeliverable: {target.value}")
                status = os.EX_NOUSER
            elif target.kind == "mailbox":
                print(f"{rcpt}... deliverable: mailer local, user {target.value}")
            elif target.kind == "remote":
                print(f"{rcpt}... deliverable: mailer smtp, address {target.value}")
            else:
                print(f"{rcpt}... deliverable: mailer {target.kind}, {target.value}")
    return status
