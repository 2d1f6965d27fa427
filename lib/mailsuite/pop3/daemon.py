"""pop3d: the POP3 server program (see pop3d(8)).

With no arguments it serves one session on stdin/stdout, as inetd, xinetd
and systemd (`Accept=yes`) run it; `--tls` makes that session start with
TLS (POP3S on port 995).  With `-d` it is its own listener on the addresses
of `[pop3] listen` and `listen_tls`, forking a child per client up to
`max_sessions`.  Either way each session runs as root only until the user
has logged in, then as the user.
"""

import os

from ..core import config, log
from ..core.cli import CONFIG_OPTION, CommandLine, Option
from ..server import connection, inetd, tls
from . import session as pop3

BUSY = b"-ERR [SYS/TEMP] too many sessions; try again later\r\n"
COMMAND_LINE = CommandLine("pop3d", [
    CONFIG_OPTION,
    Option(("-d", "--daemon"), "daemon", "listen on [pop3] listen/listen_tls and fork a child per client"),
    Option(("--tls",), "tls", "inetd mode: start the session with TLS (POP3S)"),
], ["[-C FILE] [--tls]", "[-C FILE] -d|--daemon"],
    "POP3 server for the mbox spools: one session on stdin/stdout (inetd), or -d for a standalone listener.")


def main(argv):
    options = COMMAND_LINE.options_only(argv[1:])
    cfg = config.load(options.get("config"))
    logger = log.setup(cfg, "pop3d")
    limits = connection.Limits.of(cfg.pop3, cfg.pop3.idle_timeout)

    daemon, implicit_tls = options.get("daemon"), bool(options.get("tls"))
    # loaded once, before any fork; not at all for a session on pipes, which can never start TLS
    context = tls.tls_context(cfg, "pop3") if daemon or inetd.tls_possible(implicit_tls) else None

    def session(conn):
        pop3.serve(conn, cfg, logger, context)

    if not daemon:
        inetd.serve_inetd(session, tls=context, implicit_tls=implicit_tls, limits=limits)
        return os.EX_OK
    from ..server import listener  # the listener's modules only for -d
    listener.serve_forking(session, listeners=listener.addresses(cfg, "pop3"), tls=context,
                           max_children=cfg.pop3.max_sessions, logger=logger, busy_reply=BUSY, limits=limits,
                           preload=("mailsuite.server.passwords", "mailsuite.core.memory", *pop3.LOADED_LATER))
    return os.EX_OK
