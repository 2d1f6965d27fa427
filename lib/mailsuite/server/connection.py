"""One client connection, as every network daemon of the suite reads and writes it.

The server harness is this module, `listener` and `inetd` (the two ways of
getting clients) and `tls`.

A protocol module sees only `Connection`: bounded line reads, exact reads
for literals, buffered writes, STARTTLS.  Output is flushed automatically
before the session blocks for more input, so pipelined commands are
answered in one write and a lone command is never left unanswered.

inetd mode (`serve_inetd`) runs one session on stdin/stdout, which is what
inetd, xinetd and systemd `Accept=yes` hand us; when stdin is a socket the
peer address comes from it and STARTTLS works, when it is a pair of pipes
the peer is local.  Standalone mode (`serve_forking`) forks one child per
connection, like UW ipop3d under inetd, so a crash or a hostile client
affects one session only and each child can drop to its user after login;
SMTP, whose sessions never change identity, reuses its session processes
for one connection after another (pool.py).

Security stance: what one client may cost is bounded here, once, for SMTP,
POP3 and IMAP alike (`Limits`, from each protocol's configuration section):
- memory: a line is never buffered beyond its limit; an overlong line is
  discarded up to its end and reported, and a "line" that goes on for
  DISCARD_FACTOR times the limit (DISCARD_AT_LEAST bytes at least) without
  an end closes the connection;
- time: a whole command line must arrive within the line timeout (a
  deadline per line, not an idle timer that every byte restarts, so a
  client trickling one byte at a time is cut off), a caller may set a
  shorter deadline (SMTP's data_timeout), and the whole login phase, from
  connect until the protocol calls `end_login_phase()`, has one deadline;
- commands: only `login_commands` lines may be sent before login;
- sessions: the listener caps its children, and those from one address.
Plaintext received before STARTTLS is thrown away (no command injection
across the handshake).
"""

import collections
import errno
import os
import select
import socket
import stat
import sys
import time

LOADED_LATER = ("ipaddress",)  # is_loopback's, imported when first asked: a -d listener loads it before forking
READ_CHUNK = 65536
WRITE_HIGH_WATER = 65536
# An overlong line is skipped to its end only if that comes within 64 times the limit (1 MiB at least).
DISCARD_FACTOR = 64
DISCARD_AT_LEAST = 1 << 20


class LineTooLong(Exception):
    """The client sent a line longer than the protocol allows (already discarded)."""


class PeerGone(Exception):
    """The client closed the connection or it broke."""


class LineFlood(PeerGone):
    """The client sent far more than a line without a line end (see DISCARD_FACTOR): treated as gone."""


class SessionLimit(Exception):
    """The client overstayed a limit of the harness; the protocol says goodbye and the session ends."""


class IdleTimeout(SessionLimit):
    """A command line, or the whole login phase, did not arrive before its deadline."""


class TooManyCommands(SessionLimit):
    """The client used up the command lines allowed before login."""


class Limits(collections.namedtuple("Limits", "line_timeout login_timeout login_commands per_address",
                                    defaults=(600, 0, 0, 0))):
    """What one client may cost: the settings of a protocol's configuration section.

    line_timeout: a whole command line must arrive within this; login_timeout:
    the whole login phase, from connect (0: no deadline); login_commands:
    command lines allowed before login (0: no budget); per_address: -d, live
    sessions from one client address (0: no limit).  (collections, not
    typing: a session process does not load typing for one class.)
    """

    __slots__ = ()

    @classmethod
    def of(cls, section, line_timeout):
        """From a [smtp], [pop3] or [imap] section; LINE_TIMEOUT is its per-line timeout key's value."""
        return cls(line_timeout, section.login_timeout, section.max_login_commands,
                   section.max_sessions_per_address)


class Connection:
    """One client, over a socket (possibly TLS) or a pair of pipes."""

    def __init__(self, *, sock=None, rfd=None, wfd=None, timeout=600):
        self._sock = sock
        self._rfd, self._wfd = rfd, wfd
        self._inbuf = bytearray()
        self._outbuf = bytearray()
        self._timeout = timeout
        self._login_deadline = None
        self._login_commands = None
        self.is_tls = _is_tls(sock)
        self.peer = _peer_of(sock) if sock is not None else None
        if sock is not None:
            sock.settimeout(timeout)

    @classmethod
    def from_stdio(cls, timeout=600):
        """stdin/stdout as inetd hands them: a socket or two pipes."""
        if stat.S_ISSOCK(os.fstat(0).st_mode):
            sock = socket.socket(fileno=os.dup(0))
            return cls(sock=sock, timeout=timeout)
        return cls(rfd=0, wfd=1, timeout=timeout)

    # --- the login phase -------------------------------------------------

    def start_login_phase(self, limits):
        """From now until end_login_phase(): one deadline for everything, and a budget of command lines."""
        self._login_deadline = time.monotonic() + limits.login_timeout if limits.login_timeout else None
        self._login_commands = limits.login_commands or None

    def end_login_phase(self):
        """The client logged in (SMTP: started a transaction): only the per-line limits remain."""
        self._login_deadline = self._login_commands = None

    def _deadline(self, explicit=None):
        """When the read starting now must be done: the line timeout, the login phase, the caller's own."""
        deadline = time.monotonic() + self._timeout
        for other in (self._login_deadline, explicit):
            if other is not None:
                deadline = min(deadline, other)
        return deadline

    # --- input -----------------------------------------------------------

    def readline(self, limit, deadline=None, *, in_pieces=False):
        """One line including its end; at most LIMIT bytes, all of it before the deadline.

        The deadline is the line timeout from now, or the end of the login
        phase, or DEADLINE (a time.monotonic() value) when that is sooner:
        IdleTimeout when it passes, however many bytes came meanwhile.  A
        longer line is read to its end and dropped, then LineTooLong is
        raised, so the next readline() starts at the next command; IN_PIECES
        returns it instead LIMIT bytes at a time, the last piece with the
        line end (message text, where no line is too long to keep).  Before
        login every call uses up one command line of the budget.
        """
        if self._login_commands is not None:
            if self._login_commands <= 0:
                raise TooManyCommands()
            self._login_commands -= 1
        deadline = self._deadline(deadline)
        scanned = 0
        while True:
            end = self._inbuf.find(b"\n", scanned)
            if end >= 0 and end + 1 <= limit:
                line = bytes(self._inbuf[:end + 1])
                del self._inbuf[:end + 1]
                return line
            if len(self._inbuf) >= limit and in_pieces:
                piece = bytes(self._inbuf[:limit])
                del self._inbuf[:limit]
                return piece
            if end >= 0:
                del self._inbuf[:end + 1]
                raise LineTooLong()
            if len(self._inbuf) > limit:
                self._discard_rest_of_line(max(limit * DISCARD_FACTOR, DISCARD_AT_LEAST), deadline)
                raise LineTooLong()
            scanned = len(self._inbuf)
            self._fill(deadline)

    def _discard_rest_of_line(self, most, deadline):
        discarded = 0
        while True:
            end = self._inbuf.find(b"\n")
            if end >= 0:
                del self._inbuf[:end + 1]
                return
            discarded += len(self._inbuf)
            self._inbuf.clear()
            if discarded > most:
                raise LineFlood(f"{discarded} bytes without a line end")
            self._fill(deadline)

    def read_exact(self, n, deadline=None):
        """Exactly N bytes (an IMAP literal), within the line timeout; PeerGone if the client leaves first."""
        deadline = self._deadline(deadline)
        while len(self._inbuf) < n:
            self._fill(deadline)
        data = bytes(self._inbuf[:n])
        del self._inbuf[:n]
        return data

    def fileno(self):
        """The descriptor client input arrives on, for select() beside other events (IMAP IDLE).

        Check has_pending_input() first: input already buffered here will
        not wake a select() on this descriptor.
        """
        return self._sock.fileno() if self._sock is not None else self._rfd

    def wait_readable(self, timeout):
        """Whether client input arrives within `timeout` seconds (buffered input counts)."""
        if self.has_pending_input():
            return True
        readable, _, _ = select.select([self.fileno()], [], [], timeout)
        return bool(readable)

    @property
    def local_port(self):
        """The port the client connected to, or None (pipes: sendmail -bs, tests)."""
        try:
            return self._sock.getsockname()[1] if self._sock is not None else None
        except OSError:
            return None

    def has_pending_input(self):
        """True when the client already sent more than we have consumed (pipelining)."""
        return bool(self._inbuf) or (self.is_tls and self._sock.pending() > 0)

    def _fill(self, deadline):
        """Read more input before DEADLINE, flushing our output first so the client is never left waiting."""
        self.flush()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise IdleTimeout()
        try:
            if self._sock is not None:
                self._sock.settimeout(remaining)
                data = self._sock.recv(READ_CHUNK)
            else:
                ready, _, _ = select.select([self._rfd], [], [], remaining)
                if not ready:
                    raise IdleTimeout()
                data = os.read(self._rfd, READ_CHUNK)
        except (socket.timeout, TimeoutError):
            raise IdleTimeout() from None
        except OSError as exc:                  # ssl.SSLError and ConnectionError among them
            raise PeerGone(str(exc)) from None
        if not data:
            raise PeerGone("connection closed")
        self._inbuf += data

    # --- output ----------------------------------------------------------

    def write(self, data):
        self._outbuf += data
        if len(self._outbuf) >= WRITE_HIGH_WATER:
            self.flush()

    def flush(self):
        if not self._outbuf:
            return
        data, self._outbuf = self._outbuf, bytearray()
        try:
            if self._sock is not None:
                self._sock.settimeout(self._timeout)
                self._sock.sendall(data)
            else:
                view = memoryview(data)
                while view:
                    _, ready, _ = select.select([], [self._wfd], [], self._timeout)
                    if not ready:
                        raise IdleTimeout()
                    view = view[os.write(self._wfd, view):]
        except (socket.timeout, TimeoutError):
            raise IdleTimeout() from None
        except OSError as exc:
            raise PeerGone(str(exc)) from None

    # --- connection state ------------------------------------------------

    def tls_parameters(self):
        """(protocol version, cipher, secret bits) of the TLS in use, or None: for Received: lines."""
        if not self.is_tls:
            return None
        name, _, bits = self._sock.cipher()
        return self._sock.version(), name, bits

    def starttls(self, context):
        """Switch to TLS as the server; any plaintext the client sent ahead is dropped."""
        if self._sock is None:
            raise OSError(errno.ENOTSOCK, "TLS needs a socket, not pipes")
        if self.is_tls:
            raise OSError(errno.EISCONN, "TLS is already active")
        self.flush()
        self._inbuf.clear()
        try:
            self._sock = context.wrap_socket(self._sock, server_side=True, do_handshake_on_connect=False)
            self._handshake(self._deadline())
        except OSError as exc:
            raise PeerGone(f"TLS handshake failed: {exc}") from None
        self._sock.settimeout(self._timeout)
        self.is_tls = True

    def _handshake(self, deadline):
        """The whole TLS handshake before DEADLINE (a client trickling its hello is cut off like any line)."""
        import ssl  # loaded already: a context exists
        self._sock.setblocking(False)
        while True:
            try:
                self._sock.do_handshake()
                return
            except ssl.SSLWantReadError:
                wanted = ([self._sock], [])
            except ssl.SSLWantWriteError:
                wanted = ([], [self._sock])
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not any(select.select(*wanted, [], remaining)):
                raise IdleTimeout()

    @property
    def can_starttls(self):
        """TLS can still be started: a socket, not pipes, and not already TLS."""
        return self._sock is not None and not self.is_tls

    def set_timeout(self, seconds):
        self._timeout = seconds
        if self._sock is not None:
            self._sock.settimeout(seconds)

    def is_loopback(self):
        """True for 127.0.0.0/8, ::1 and local pipes or Unix sockets (the client is on this host)."""
        if self.peer is None:
            return True
        try:
            import ipaddress
            address = ipaddress.ip_address(self.peer[0].split("%", 1)[0])
        except ValueError:
            return False
        if getattr(address, "ipv4_mapped", None):
            address = address.ipv4_mapped
        return address.is_loopback

    def peer_text(self):
        """The peer for log lines: an address, or 'local'."""
        return self.peer[0] if self.peer else "local"

    def close(self):
        try:
            self.flush()
        except (PeerGone, IdleTimeout):
            pass
        if self._sock is not None:
            self._sock.close()


def _peer_of(sock):
    """(host, port) of an Internet socket; None for Unix sockets (local)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        return tuple(sock.getpeername()[:2])
    except OSError:
        return None


def _is_tls(sock):
    """Whether SOCK is a TLS socket (ssl is imported only where TLS is used: it costs a session 4 MB)."""
    ssl = sys.modules.get("ssl")
    return ssl is not None and isinstance(sock, ssl.SSLSocket)
