"""inetd mode: one session on stdin/stdout, as inetd, xinetd and systemd `Accept=yes` start us.

When stdin is a socket the peer address comes from it and STARTTLS works;
when it is a pair of pipes the peer is local."""

from ..core.config import ConfigError
from .connection import Connection, Limits, PeerGone, SessionLimit
from .tls import tls_context


def serve_inetd(handler, cfg, *, implicit_tls=False, limits=Limits()):
    """Run one session on stdin/stdout; returns when the handler does."""
    conn = Connection.from_stdio(timeout=limits.line_timeout)
    conn.start_login_phase(limits)
    try:
        if implicit_tls:
            context = tls_context(cfg)
            if context is None:
                raise ConfigError("implicit TLS requested but [tls] cert_file is not set")
            conn.starttls(context)
        handler(conn)
    except (PeerGone, SessionLimit):
        pass
    finally:
        conn.close()
