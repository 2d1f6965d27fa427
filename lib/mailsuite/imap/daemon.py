"""imapd — the IMAP4rev1 server: one session on stdin/stdout, or a listener.

With no arguments imapd serves one client on stdin/stdout, as inetd,
xinetd and systemd `Accept=yes` start it.  `-d` runs the shared forking
listener on the `[imap] listen` addresses (and `listen_tls` for implicit
TLS), one child process per client.  `--preauth USER` starts an already
authenticated session on stdin/stdout (for tunnels such as `ssh host
imapd --preauth me`, and for tests); only root may name another user.

Exit status: 0, or a sysexits code with a one-line message.
"""

import os

from ..core import config, log
from ..core.cli import CONFIG_OPTION, CommandLine, Fatal, Option
from ..core.users import UserDB
from ..server import connection, inetd, tls
from ..server.auth import Authenticator
from .mailbox_commands import LOADED_LATER
from .session import Session

COMMAND_LINE = CommandLine("imapd", [
    CONFIG_OPTION,
    Option(("-d",), "daemon", "standalone: listen on [imap] listen/listen_tls and fork per client"),
    Option(("--preauth",), "preauth", "serve USER on stdin/stdout without a login", metavar="USER"),
    Option(("--tls",), "tls", "inetd mode with implicit TLS (IMAPS)"),
], ["[-C FILE] [--tls]", "[-C FILE] -d", "[-C FILE] --preauth USER"],
    "IMAP4rev1 server on the mail spool and ~/mail.")


def main(argv):
    options = COMMAND_LINE.options_only(argv[1:])
    if options.get("daemon") and options.get("preauth"):
        raise COMMAND_LINE.error("-d and --preauth exclude each other")
    cfg = config.load(options.get("config"))
    preauth = options.get("preauth")
    logger = log.setup(cfg, "imapd")
    limits = connection.Limits.of(cfg.imap, cfg.imap.idle_timeout)
    if preauth:
        user = UserDB(cfg).lookup(preauth)
        if user is None:
            raise Fatal(os.EX_NOUSER, f"no such user: {preauth}")
        if os.geteuid() != 0 and user.uid != os.geteuid():
            raise Fatal(os.EX_NOPERM, f"only root may serve another user's mail ({preauth})")
        conn = connection.Connection.from_stdio(timeout=cfg.imap.idle_timeout)
        try:
            Session(conn, cfg, logger, preauth_user=user, tls_context=None).run()
        except (connection.PeerGone, connection.IdleTimeout):
            pass
        finally:
            conn.close()
        return 0
    context = tls.tls_context(cfg, "imap")          # a preauthenticated session never needs the key

    def handle(conn):
        Session(conn, cfg, logger, authenticator=Authenticator(cfg, "imap", logger), tls_context=context).run()

    if options.get("daemon"):
        from ..server import listener  # the listener's modules only for -d
        listener.serve_forking(handle, listeners=listener.addresses(cfg, "imap"), tls=context,
                               max_children=cfg.imap.max_sessions, logger=logger, limits=limits,
                               busy_reply=b"* BYE too many connections; try again later\r\n",
                               preload=("mailsuite.server.passwords", "mailsuite.core.memory", *LOADED_LATER))
        return 0
    inetd.serve_inetd(handle, tls=context, implicit_tls=bool(options.get("tls")), limits=limits)
    return 0
