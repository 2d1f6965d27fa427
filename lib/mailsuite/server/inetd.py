"""inetd mode: one session on stdin/stdout, as inetd, xinetd and systemd `Accept=yes` start us.

When stdin is a socket the peer address comes from it and STARTTLS works;
when it is a pair of pipes the peer is local."""

import os
import stat

from ..core.config import ConfigError
from .connection import Connection, Limits, PeerGone, SessionLimit


def tls_possible(implicit_tls):
    """Whether this session may ever use TLS: implicit TLS, or STARTTLS on a socket (never on pipes).

    A program whose session cannot need TLS skips loading its key (and ssl).
    """
    return implicit_tls or stat.S_ISSOCK(os.fstat(0).st_mode)


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
