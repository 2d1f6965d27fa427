"""HOST:PORT, as every listen address, relay host and route in the configuration is written.

One reading for all of them: `host:port`, `[address or name]:port` (the
brackets are how an IPv6 address carries a port), or a bare host when the
setting has a default port.  A bare IPv6 address (`::1`) is a host without
a port.  An empty host in a listen address means every IPv4 address.
"""

from .config import ConfigError

WILDCARDS = {"": "0.0.0.0", "*": "0.0.0.0"}
# where a client reaches a daemon that listens on a wildcard address
LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1"}


class HostPortError(ConfigError):
    """A setting is not HOST:PORT; the message names the setting and quotes the value."""


def parse(text, default_port=None, *, key="address"):
    """(host, port) from TEXT, the value of setting KEY; DEFAULT_PORT when TEXT names no port."""
    original, text = text, text.strip()

    def bad(what):
        return HostPortError(f"{key}: {what}: {original!r}")

    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed or rest and not rest.startswith(":"):
            raise bad("not HOST:PORT")
        port = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, None                  # a name, an IPv4 address or a bare IPv6 address
    if any(c.isspace() or c in "[]/" for c in host):
        raise bad("not HOST:PORT")
    if port is None:
        if default_port is None:
            raise bad("not HOST:PORT")
        return host, default_port
    if not port.isdigit() or int(port) > 65535:        # port 0: any free port (tests, `mailsuite up`)
        raise bad("bad port")
    return host, int(port)


def listen_address(text, default_port=None, *, key="listen"):
    """(host, port) to bind for a listen setting: an empty host or `*` is every IPv4 address."""
    host, port = parse(text, default_port, key=key)
    return WILDCARDS.get(host, host), port


def connect_address(text, default_port=None, *, key="listen"):
    """(host, port) where a client on this machine reaches a daemon listening on TEXT."""
    host, port = listen_address(text, default_port, key=key)
    return LOOPBACK.get(host, host), port
