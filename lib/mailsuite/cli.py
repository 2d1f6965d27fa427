"""What every program shares at its edge: sysexits and one-line errors.

A program's `main(argv)` returns an exit status; `run()` turns the errors a
user can cause into a one-line message on stderr and the sysexits code that
callers (cron, mutt, PHP, the MTA) act upon, instead of a traceback.

inetd, xinetd and systemd (`Accept=yes`) hand a server its client's
connection as stdin, stdout *and* stderr.  `run()` sees that first and
points stderr at /dev/null, so that no log line (the log falls back to
stderr when there is no syslog socket), error message or traceback is ever
written into the client's session; the one-line error goes to syslog
instead.
"""

import os
import stat
import sys

from .config import ConfigError


class Fatal(Exception):
    """Stop the program: `Fatal(os.EX_NOUSER, "no such user: bob")`."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class UsageError(Exception):
    """A command line that does not parse."""


def getopt(args, shortopts):
    """POSIX getopt for short options: (list of (flag, value), operands).

    getopt.getopt from the standard library would do, but it imports
    gettext and locale, which is most of a delivery agent's start-up time.
    Options stop at the first operand or at `--`.
    """
    options = []
    args = list(args)
    while args and args[0].startswith("-") and args[0] != "-":
        arg = args.pop(0)
        if arg == "--":
            break
        if arg.startswith("--"):
            options.append((arg, ""))
            continue
        i = 1
        while i < len(arg):
            flag = arg[i]
            spec = shortopts.find(flag)
            if spec < 0 or flag == ":":
                raise UsageError(f"unknown option -{flag}")
            if shortopts[spec + 1:spec + 2] == ":":
                value = arg[i + 1:] or (args.pop(0) if args else None)
                if value is None:
                    raise UsageError(f"option -{flag} needs a value")
                options.append((f"-{flag}", value))
                break
            options.append((f"-{flag}", ""))
            i += 1
    return options, args


def program_name(argv0=None):
    return os.path.basename(argv0 or sys.argv[0]) or "mailsuite"


def stderr_is_the_client():
    """Whether stderr is the socket the client talks on (inetd gives it as stdin, stdout and stderr)."""
    try:
        err = os.fstat(2)
        if not stat.S_ISSOCK(err.st_mode):
            return False
        return any((st.st_dev, st.st_ino) == (err.st_dev, err.st_ino) for st in map(os.fstat, (0, 1)))
    except OSError:
        return False


def _silence_stderr():
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


def _report(name, message, to_syslog):
    if to_syslog:
        import syslog
        syslog.openlog(name, syslog.LOG_PID, syslog.LOG_MAIL)
        syslog.syslog(syslog.LOG_ERR, message)
    else:
        print(f"{name}: {message}", file=sys.stderr)


def run(main, argv=None):
    """Call main(argv) and exit with its status; map user errors to sysexits."""
    argv = sys.argv if argv is None else argv
    name = program_name(argv[0] if argv else None)
    serving_stdio = stderr_is_the_client()
    if serving_stdio:
        _silence_stderr()
    try:
        status = main(argv)
    except Fatal as exc:
        _report(name, str(exc), serving_stdio)
        status = exc.status
    except ConfigError as exc:
        _report(name, str(exc), serving_stdio)
        status = os.EX_CONFIG
    except KeyboardInterrupt:
        status = 130
    except BrokenPipeError:
        status = os.EX_IOERR
    sys.exit(status or 0)
