"""What every program shares at its edge: sysexits and one-line errors.

A program's `main(argv)` returns an exit status; `run()` turns the errors a
user can cause into a one-line message on stderr and the sysexits code that
callers (cron, mutt, PHP, the MTA) act upon, instead of a traceback.
"""

import os
import sys

from .config import ConfigError


class Fatal(Exception):
    """Stop the program: `Fatal(os.EX_NOUSER, "no such user: bob")`."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def program_name(argv0=None):
    return os.path.basename(argv0 or sys.argv[0]) or "mailsuite"


def run(main, argv=None):
    """Call main(argv) and exit with its status; map user errors to sysexits."""
    argv = sys.argv if argv is None else argv
    name = program_name(argv[0] if argv else None)
    try:
        status = main(argv)
    except Fatal as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        status = exc.status
    except ConfigError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        status = os.EX_CONFIG
    except KeyboardInterrupt:
        status = 130
    except BrokenPipeError:
        status = os.EX_IOERR
    sys.exit(status or 0)
