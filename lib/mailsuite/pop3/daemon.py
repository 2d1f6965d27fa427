"""pop3d: the POP3 server program (see pop3d(8)).

With no arguments it serves one session on stdin/stdout, as inetd, xinetd
and systemd (`Accept=yes`) run it; `--tls` makes that session start with
TLS (POP3S on port 995).  With `-d` it is its own listener on the addresses
of `[pop3] listen` and `listen_tls`, forking a child per client up to
`max_sessions`.  Either way each session runs as root only until the user
has logged in, then as the user.
"""

import errno
import os
import re

from ..core import config, log
from ..core.cli import CONFIG_OPTION, CommandLine, Fatal, Option
from ..server import connection, inetd, listener, tls
from . import session as pop3

BUSY = b"-ERR [SYS/TEMP] too many sessions; try again later\r\n"
COMMAND_LINE = CommandLine("pop3d", [
    CONFIG_OPTION,
    Option(("-d", "--daemon"), "daemon", "listen on [pop3] listen/listen_tls and fork a child per client"),
    Option(("--tls",), "tls", "inetd mode: start the session with TLS (POP3S)"),
], ["[-C FILE] [--tls]", "[-C FILE] -d|--daemon"],
    "POP3 server for the mbox spools: one session on stdin/stdout (inetd), or -d for a standalone listener.")


def parse_args(argv):
    options, operands = COMMAND_LINE.parse(argv[1:])
    if operands:
        raise COMMAND_LINE.error(f"unexpected argument {operands[0]!r}")
    return options


def parse_address(text):
    """'HOST:PORT' or '[V6]:PORT' -> (host, port)."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\s]+):(\d+)", text)
    if not m:
        raise Fatal(os.EX_CONFIG, f"[pop3] listen: not HOST:PORT: {text!r}")
    host, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    if int(port) > 65535:
        raise Fatal(os.EX_CONFIG, f"[pop3] listen: bad port in {text!r}")
    return host, int(port)


def main(argv):
    options = parse_args(argv)
    if options.get("help"):
        print(COMMAND_LINE.help(), end="")
        return 0
    cfg = config.load(options.get("config"))
    logger = log.setup(cfg, "pop3d")
    limits = connection.Limits.of(cfg.pop3, cfg.pop3.idle_timeout)

    shared = tls.tls_context(cfg, "pop3") if options.get("daemon") else None   # made once, before forking

    def session(conn):
        context = shared
        if context is None and conn.can_starttls:   # inetd on a socket; on pipes STLS cannot work anyway
            context = tls.tls_context(cfg, "pop3")
        pop3.serve(conn, cfg, logger, context)

    if not options.get("daemon"):
        inetd.serve_inetd(session, cfg, implicit_tls=bool(options.get("tls")), limits=limits)
        return os.EX_OK
    listeners = [(*parse_address(a), False) for a in cfg.pop3.listen]
    listeners += [(*parse_address(a), True) for a in cfg.pop3.listen_tls]
    if not listeners:
        raise Fatal(os.EX_CONFIG, "[pop3] listen and listen_tls are both empty")
    try:
        listener.serve_forking(session, cfg, listeners=listeners, max_children=cfg.pop3.max_sessions,
                             logger=logger, busy_reply=BUSY, limits=limits,
                             preload=("mailsuite.server.passwords", *pop3.LOADED_LATER),
                             on_ready=lambda bound: logger.info(
                                 "listening on %s", ", ".join(f"{h}:{p}" for h, p in bound)))
    except OSError as exc:
        status = os.EX_UNAVAILABLE if exc.errno == errno.EADDRINUSE else os.EX_OSERR
        raise Fatal(status, f"cannot listen: {exc.strerror or exc}") from None
    return os.EX_OK
