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

import gc
import os
import stat
import sys

from .errors import ExitError, Fatal


class Option:
    """One command-line option: its spellings, the value it takes (METAVAR; None for a flag), what it does.

    REPEAT collects every value in a list (mail -a FILE -a FILE)."""

    __slots__ = ("flags", "name", "help", "metavar", "repeat")

    def __init__(self, flags, name, help, metavar=None, repeat=False):
        self.flags, self.name, self.help, self.metavar, self.repeat = flags, name, help, metavar, repeat


class CommandLine:
    """A program's command line, declared once: options, usage lines, description.

    The parser, `--help` and every usage error come from this one table, so
    that all programs parse alike (POSIX short options, grouped flags,
    `--long[=value]`, `--` ends the options) and a usage error is always one
    line and EX_USAGE.  The standard library's getopt and argparse would do
    the parsing, at the price of importing gettext and locale, which is most
    of a delivery agent's start-up time.
    """

    def __init__(self, program, options, synopsis, description=""):
        self.program, self.options, self.synopsis, self.description = program, options, synopsis, description
        self._by_flag = {flag: option for option in options for flag in option.flags}

    def usage(self):
        lines = [f"{self.program} {line}".rstrip() for line in self.synopsis]
        return "usage: " + "\n       ".join(lines)

    def help(self):
        rows = [(", ".join(o.flags) + (f" {o.metavar}" if o.metavar else ""), o.help) for o in self.options]
        width = max((len(left) for left, _ in rows), default=0)
        text = self.usage() + "\n"
        if self.description:
            text += "\n" + self.description.rstrip("\n") + "\n"
        return text + "".join(f"  {left:<{width}}  {right}\n" for left, right in rows)

    def error(self, message):
        return Fatal(os.EX_USAGE, f"{message} (see {self.program} --help)")

    def options_only(self, args):
        """The options of a program that takes no operands: `--help` prints the usage and exits 0,
        an operand is a usage error."""
        values, operands = self.parse(args)
        if values.get("help"):
            sys.stdout.write(self.help())
            raise SystemExit(0)
        if operands:
            raise self.error(f"unexpected argument {operands[0]!r}")
        return values

    def parse(self, args, *, intermix=False):
        """({option name: value, True or [values]}, operands); `--help` gives {"help": True}.

        INTERMIX lets options follow operands (mail ADDRESS -s SUBJECT)."""
        values, operands = {}, []
        args = list(args)
        while args:
            arg = args.pop(0)
            if arg == "--":
                operands += args
                break
            if arg in ("--help", "-?"):
                return {"help": True}, []
            if not arg.startswith("-") or arg == "-":
                operands.append(arg)
                if not intermix:
                    operands += args
                    break
                continue
            if arg.startswith("--"):
                flag, eq, attached = arg.partition("=")
                self._take(values, flag, attached if eq else None, args)
                continue
            i = 1
            while i < len(arg):
                flag = "-" + arg[i]
                option = self._by_flag.get(flag)
                if option is not None and option.metavar:
                    self._take(values, flag, arg[i + 1:] or None, args)
                    break
                self._take(values, flag, None, args)
                i += 1
        return values, operands

    def _take(self, values, flag, attached, args):
        option = self._by_flag.get(flag)
        if option is None:
            if flag == "-h":
                values["help"] = True
                return
            raise self.error(f"unknown option {flag}")
        if option.metavar is None:
            if attached is not None:
                raise self.error(f"option {flag} takes no value")
            values[option.name] = True
            return
        if attached is None:
            if not args:
                raise self.error(f"option {flag} needs {option.metavar}")
            attached = args.pop(0)
        if option.repeat:
            values.setdefault(option.name, []).append(attached)
        else:
            values[option.name] = attached


CONFIG_OPTION = Option(("-C",), "config", "configuration file (default $MAILSUITE_CONFIG or "
                       "/etc/mailsuite/mailsuite.conf)", metavar="FILE")


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
    except ExitError as exc:
        _report(name, str(exc), serving_stdio)
        status = exc.status
    except KeyboardInterrupt:
        status = 130
    except BrokenPipeError:
        status = os.EX_IOERR
    _skip_final_collection()
    sys.exit(status or 0)


def _skip_final_collection():
    """Exempt every object from the garbage collector, since the process is about to end.

    The collections the interpreter runs while it shuts down walk every
    object the imports made, about 3 ms of a delivery agent's life; the
    kernel frees the memory anyway.  Nothing else changes: atexit handlers,
    buffer flushes and finalizers of objects whose count drops still run."""
    gc.freeze()
