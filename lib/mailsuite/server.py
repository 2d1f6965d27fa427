"""The harness every network daemon shares: one client connection, and the
two ways of getting clients (inetd and a forking listener).

A protocol module sees only `Connection`: bounded line reads, exact reads
for literals, buffered writes, STARTTLS.  Output is flushed automatically
before the session blocks for more input, so pipelined commands are
answered in one write and a lone command is never left unanswered.

inetd mode (`serve_inetd`) runs one session on stdin/stdout, which is what
inetd, xinetd and systemd `Accept=yes` hand us; when stdin is a socket the
peer address comes from it and STARTTLS works, when it is a pair of pipes
the peer is local.  Standalone mode (`serve_forking`) forks one child per
connection, like UW ipop3d under inetd, so a crash or a hostile client
affects one session only and each child can drop to its user after login.

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

import errno
import ipaddress
import os
import select
import signal
import socket
import ssl
import stat
import sys
import time
from dataclasses import dataclass

from .config import ConfigError

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


@dataclass(frozen=True)
class Limits:
    """What one client may cost: the settings of a protocol's configuration section."""

    line_timeout: float = 600      # a whole command line must arrive within this
    login_timeout: float = 0       # the whole login phase, from connect (0: no deadline)
    login_commands: int = 0        # command lines allowed before login (0: no budget)
    per_address: int = 0           # -d: live sessions from one client address (0: no limit)

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
        self.is_tls = isinstance(sock, ssl.SSLSocket)
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

    def readline(self, limit, deadline=None):
        """One line including its end; at most LIMIT bytes, all of it before the deadline.

        The deadline is the line timeout from now, or the end of the login
        phase, or DEADLINE (a time.monotonic() value) when that is sooner:
        IdleTimeout when it passes, however many bytes came meanwhile.  A
        longer line is read to its end and dropped, then LineTooLong is
        raised, so the next readline() starts at the next command.  Before
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
            if end >= 0:
                if end + 1 > limit:
                    del self._inbuf[:end + 1]
                    raise LineTooLong()
                line = bytes(self._inbuf[:end + 1])
                del self._inbuf[:end + 1]
                return line
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
        except (ConnectionError, ssl.SSLError, OSError) as exc:
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
        except (ConnectionError, ssl.SSLError, OSError) as exc:
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
            raise ssl.SSLError("TLS is already active")
        self.flush()
        self._inbuf.clear()
        try:
            self._sock = context.wrap_socket(self._sock, server_side=True, do_handshake_on_connect=False)
            self._handshake(self._deadline())
        except (ssl.SSLError, OSError) as exc:
            raise PeerGone(f"TLS handshake failed: {exc}") from None
        self._sock.settimeout(self._timeout)
        self.is_tls = True

    def _handshake(self, deadline):
        """The whole TLS handshake before DEADLINE (a client trickling its hello is cut off like any line)."""
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


# --- TLS -------------------------------------------------------------------

def tls_context(cfg, section=None):
    """The server TLS context from [tls] cert_file/key_file, or None when TLS is not configured.

    A protocol section may override both with its own `tls_cert_file` and
    `tls_key_file` (one certificate per service name).
    """
    own = getattr(cfg, section, None) if section else None
    cert = getattr(own, "tls_cert_file", "") or cfg.tls.cert_file
    key = getattr(own, "tls_key_file", "") or cfg.tls.key_file or cert
    if not cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = getattr(ssl.TLSVersion, cfg.tls.min_version.replace(".", "_"))
    if cfg.tls.ciphers:
        context.set_ciphers(cfg.tls.ciphers)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"[tls] cannot load {cert} / {key}: {getattr(exc, 'strerror', None) or exc}") from None
    return context


def tls_context_if_readable(cfg, section, logger):
    """tls_context(), or None with a warning when the key or certificate exists but
    this process may not read it: a user running a daemon of their own (sendmail
    -bd) serves without STARTTLS instead of failing over root's key."""
    own = getattr(cfg, section, None)
    cert = getattr(own, "tls_cert_file", "") or cfg.tls.cert_file
    key = getattr(own, "tls_key_file", "") or cfg.tls.key_file or cert
    for path in dict.fromkeys(p for p in (cert, key) if p):
        if os.path.exists(path) and not os.access(path, os.R_OK):
            logger.warning("[tls] %s: not readable by uid %d: STARTTLS is not offered", path, os.geteuid())
            return None
    return tls_context(cfg, section)


# --- inetd mode ------------------------------------------------------------

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


# --- standalone forking listener -------------------------------------------

class _Listener:
    """The parent: accepts, forks, counts and reaps children (by client address too), stops on SIGTERM."""

    def __init__(self, handler, cfg, listeners, max_children, logger, busy_reply, limits, on_hup,
                 supervisor=None):
        self.handler, self.cfg, self.logger = handler, cfg, logger
        self.max_children, self.busy_reply, self.limits = max_children, busy_reply, limits
        self.on_hup = on_hup
        self.supervisor = supervisor
        self.children = {}               # pid -> client address
        self.stopping = self.hangup = False
        self.tls = None
        if any(implicit for _, _, implicit in listeners):
            self.tls = tls_context(cfg)
            if self.tls is None:
                raise ConfigError("implicit TLS listener configured but [tls] cert_file is not set")
        self.sockets = [(_bind(host, port), implicit) for host, port, implicit in listeners]

    def run(self, on_ready):
        self.wake = wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        old_wakeup = signal.set_wakeup_fd(wake_w)
        handlers = {signal.SIGCHLD: self._on_signal, signal.SIGTERM: self._on_signal,
                    signal.SIGINT: self._on_signal, signal.SIGHUP: self._on_signal}
        previous = {sig: signal.signal(sig, h) for sig, h in handlers.items()}
        try:
            if on_ready:
                on_ready([sock.getsockname()[:2] for sock, _ in self.sockets])
            self._accept_loop(wake_r)
            for sock, _ in self.sockets:
                sock.close()
            self.logger.info("stopped accepting; waiting for %d session(s)", len(self.children))
            while self.children:
                self._reap(block=True)
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, h in previous.items():
                signal.signal(sig, h)
            os.close(wake_r)
            os.close(wake_w)

    def _on_signal(self, signum, frame):
        if signum in (signal.SIGTERM, signal.SIGINT):
            self.stopping = True
        elif signum == signal.SIGHUP:
            self.hangup = True

    def _accept_loop(self, wake_r):
        by_fd = {sock.fileno(): (sock, implicit) for sock, implicit in self.sockets}
        while not self.stopping:
            timeout = self.supervisor.tick() if self.supervisor else None
            ready, _, _ = select.select([wake_r, *by_fd], [], [], timeout)
            if wake_r in ready:
                _drain(wake_r)
            self._reap(block=False)
            if self.hangup:
                self.hangup = False
                if self.on_hup:
                    self.on_hup()
            if self.stopping:
                break
            for fd in ready:
                if fd in by_fd:
                    self._accept(*by_fd[fd])

    def _accept(self, listener, implicit_tls):
        try:
            client, address = listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as exc:       # EMFILE and friends: keep serving the others
            self.logger.warning("accept: %s", exc)
            return
        if len(self.children) >= self.max_children:
            self.logger.warning("too many sessions (%d); refused %s", len(self.children), address[0])
            _refuse(client, self.busy_reply)
            return
        if self.limits.per_address:
            from_there = sum(1 for other in self.children.values() if other == address[0])
            if from_there >= self.limits.per_address:
                self.logger.warning("too many sessions from %s (%d); refused", address[0], from_there)
                _refuse(client, self.busy_reply)
                return
        try:
            pid = os.fork()
        except OSError as exc:
            self.logger.error("fork: %s", exc)
            _refuse(client, self.busy_reply)
            return
        if pid == 0:
            self._child(client, implicit_tls)
        self.children[pid] = address[0]
        client.close()

    def _child(self, client, implicit_tls):
        """The session process: never returns."""
        status = 0
        try:
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            for sock, _ in self.sockets:
                sock.close()
            for fd in self.wake:
                os.close(fd)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            conn = Connection(sock=client, timeout=self.limits.line_timeout)
            conn.start_login_phase(self.limits)
            try:
                if implicit_tls:
                    conn.starttls(self.tls)
                self.handler(conn)
            except (PeerGone, SessionLimit):
                pass
            finally:
                conn.close()
        except BaseException:    # one broken session must not take a traceback into the parent's loop
            self.logger.exception("session failed")
            status = 1
        finally:
            sys.stdout.flush()
            os._exit(status)

    def _reap(self, block):
        while self.children or (self.supervisor and not block):
            try:
                pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            if pid in self.children:
                self.children.pop(pid)
            elif self.supervisor:
                self.supervisor.exited(pid, status)
            if block:
                return


def serve_forking(handler, cfg, *, listeners, max_children, logger, on_ready=None,
                  busy_reply=None, limits=Limits(), on_hup=None, supervisor=None):
    """Accept on every (host, port, implicit_tls) and run handler(conn) in a child per client.

    Beyond MAX_CHILDREN live sessions, or `limits.per_address` from the
    client's address, a new client gets BUSY_REPLY and is closed.
    SIGTERM/SIGINT stop accepting; the call returns once the running
    sessions have ended.  SIGHUP calls ON_HUP.  ON_READY receives the bound
    (host, port) pairs, so port 0 may be asked for.

    SUPERVISOR looks after the caller's own children (the SMTP daemon's
    queue runner), which the listener reaps with its sessions:
    `supervisor.exited(pid, status)` hears of each that ends, and
    `supervisor.tick()` is called at every wake-up and returns the seconds
    until it wants the next call (None: no need).
    """
    _Listener(handler, cfg, listeners, max_children, logger, busy_reply, limits, on_hup,
              supervisor).run(on_ready)


def _bind(host, port):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=128, reuse_port=False)
    sock.setblocking(False)
    return sock


def _refuse(client, reply):
    """Best effort: tell the client we are busy, without ever blocking the listener."""
    try:
        client.setblocking(False)
        if reply:
            client.send(reply)
    except OSError:
        pass
    finally:
        client.close()


def _drain(fd):
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass
