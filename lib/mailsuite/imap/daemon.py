"""imapd — the IMAP4rev1 server: one session on stdin/stdout, or a listener.

With no arguments imapd serves one client on stdin/stdout, as inetd,
xinetd and systemd `Accept=yes` start it.  `-d` runs the shared forking
listener on the `[imap] listen` addresses (and `listen_tls` for implicit
TLS), one child process per client.  `--preauth USER` starts an already
authenticated session on stdin/stdout (for tunnels such as `ssh host
imapd --preauth me`, and for tests); only root may name another user.

Exit status: 0, or a sysexits code with a one-line message.
"""

import argparse
import os

from .. import config, log, server
from ..auth import Authenticator
from ..cli import Fatal
from ..users import UserDB
from .session import Session

USAGE = "imapd [-C FILE] [-d | --preauth USER]"


class _Arguments(argparse.ArgumentParser):
    """Usage errors exit EX_USAGE with one line, like every mailsuite program."""

    def error(self, message):
        raise Fatal(os.EX_USAGE, f"{message} (usage: {USAGE})")


def parse_listen(items, implicit_tls):
    out = []
    for item in items:
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit():
            raise Fatal(os.EX_CONFIG, f"bad listen address {item!r}; expected HOST:PORT")
        out.append((host.strip("[]") or "0.0.0.0", int(port), implicit_tls))
    return out


def main(argv):
    ap = _Arguments(prog="imapd", usage=USAGE, description="IMAP4rev1 server on the mail spool and ~/mail.")
    ap.add_argument("-C", dest="config", metavar="FILE", help="configuration file")
    ap.add_argument("-d", dest="daemon", action="store_true", help="standalone: listen and fork per client")
    ap.add_argument("--preauth", metavar="USER", help="serve USER on stdin/stdout without a login")
    ap.add_argument("--tls", action="store_true", help="inetd mode with implicit TLS (imaps)")
    args = ap.parse_args(argv[1:])
    cfg = config.load(args.config)
    logger = log.setup(cfg, "imapd")
    limits = server.Limits.of(cfg.imap, cfg.imap.idle_timeout)
    if args.preauth:
        user = UserDB(cfg).lookup(args.preauth)
        if user is None:
            raise Fatal(os.EX_NOUSER, f"no such user: {args.preauth}")
        if os.geteuid() != 0 and user.uid != os.geteuid():
            raise Fatal(os.EX_NOPERM, f"only root may serve another user's mail ({args.preauth})")
        conn = server.Connection.from_stdio(timeout=cfg.imap.idle_timeout)
        try:
            Session(conn, cfg, logger, preauth_user=user, tls_context=None).run()
        except (server.PeerGone, server.IdleTimeout):
            pass
        finally:
            conn.close()
        return 0
    tls = server.tls_context(cfg, "imap")           # a preauthenticated session never needs the key

    def handle(conn):
        Session(conn, cfg, logger, authenticator=Authenticator(cfg, "imap", logger), tls_context=tls).run()

    if args.daemon:
        listeners = parse_listen(cfg.imap.listen, False) + parse_listen(cfg.imap.listen_tls, True)
        if not listeners:
            raise Fatal(os.EX_CONFIG, "[imap] listen and listen_tls are both empty")

        def ready(addresses):
            logger.info("listening on %s", ", ".join(f"{h}:{p}" for h, p in addresses))

        server.serve_forking(
            handle, cfg, listeners=listeners, max_children=cfg.imap.max_sessions, logger=logger,
            on_ready=ready, busy_reply=b"* BYE too many connections; try again later\r\n",
            limits=limits,
        )
        return 0
    server.serve_inetd(handle, cfg, implicit_tls=args.tls, limits=limits)
    return 0
