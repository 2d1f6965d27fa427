"""inetd mode: one session on stdin/stdout, as inetd, xinetd and systemd `Accept=yes` start us.

When stdin is a socket the peer address comes from it and STARTTLS works;
when it is a pair of pipes the peer is local."""

from ..core.config import ConfigError
from .connection import Connection, Limits, PeerGone, SessionLimit


def serve_inetd(handler, *, tls=None, implicit_tls=False, limits=Limits()):
    """Run one session on stdin/stdout; returns when the handler does.  TLS: the context for IMPLICIT_TLS."""
    if implicit_tls and tls is None:
        raise ConfigError("implicit TLS needs a certificate: set [tls] cert_file")
    conn = Connection.from_stdio(timeout=limits.line_timeout)
    conn.start_login_phase(limits)
    try:
        if implicit_tls:
            conn.starttls(tls)
        handler(conn)
    except (PeerGone, SessionLimit):
        pass
    finally:
        conn.close()
