"""The standalone forking listener: one child process per client connection.

Like UW ipop3d under inetd, a crash or a hostile client affects one
session only, and each child can drop to its user after login.  The
listener caps its children, and those from one address; SIGTERM stops
accepting, SIGHUP calls the daemon's reload, and the daemon's own children
(the SMTP queue runner) are looked after through its supervisor."""

import errno
import os
import select
import signal
import socket

from ..core import children, hostport
from ..core.config import ConfigError
from ..core.errors import Fatal
from .connection import Connection, Limits, PeerGone, SessionLimit


class _Listener:
    """The parent: accepts, forks, counts and reaps children (by client address too), stops on SIGTERM."""

    def __init__(self, handler, listeners, max_children, logger, busy_reply, limits, on_hup, tls,
                 supervisor=None):
        self.handler, self.logger = handler, logger
        self.max_children, self.busy_reply, self.limits = max_children, busy_reply, limits
        self.on_hup = on_hup
        self.supervisor = supervisor
        self.children = {}               # pid -> client address
        self.stopping = self.hangup = False
        self.tls = tls
        if tls is None and any(implicit for _, _, implicit in listeners):
            raise ConfigError("an implicit TLS listener needs a certificate: set [tls] cert_file")
        self.sockets = [(bind(host, port), implicit) for host, port, implicit in listeners]

    def run(self, on_ready):
        self.wake = wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        old_wakeup = signal.set_wakeup_fd(wake_w)
        handlers = {signal.SIGCHLD: self._on_signal, signal.SIGTERM: self._on_signal,
                    signal.SIGINT: self._on_signal, signal.SIGHUP: self._on_signal}
        previous = {sig: signal.signal(sig, h) for sig, h in handlers.items()}
        try:
            bound = [sock.getsockname()[:2] for sock, _ in self.sockets]
            self.logger.info("listening on %s", ", ".join(f"{host}:{port}" for host, port in bound))
            if on_ready:
                on_ready(bound)
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
            children.run_child(lambda: self._session(client, implicit_tls), self.logger, "session")
        self.children[pid] = address[0]
        client.close()

    def _session(self, client, implicit_tls):
        """The session process, after the fork: nothing of the listener's is kept open."""
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

    def _reap(self, block):
        """Forget the sessions that ended; tell the supervisor of its own children."""
        if not self.children and (block or not self.supervisor):
            return                              # never block on the supervisor's long-lived child
        ended = children.reap(block)
        if ended is None:
            self.children.clear()
            return
        for pid, status in ended:
            if self.children.pop(pid, None) is None and self.supervisor:
                self.supervisor.exited(pid, status)


def serve_forking(handler, *, listeners, max_children, logger, tls=None, on_ready=None,
                  busy_reply=None, limits=Limits(), on_hup=None, supervisor=None):
    """Accept on every (host, port, implicit_tls) and run handler(conn) in a child per client.

    TLS is the context for the implicit TLS addresses, loaded once by the
    daemon before any fork.  Beyond MAX_CHILDREN live sessions, or `limits.per_address` from the
    client's address, a new client gets BUSY_REPLY and is closed.
    SIGTERM/SIGINT stop accepting; the call returns once the running
    sessions have ended.  SIGHUP calls ON_HUP.  Once every address is bound
    (an address that cannot be is Fatal, see `bind`) the listener logs them
    and ON_READY receives the (host, port) pairs, so port 0 may be asked for.

    SUPERVISOR looks after the caller's own children (the SMTP daemon's
    queue runner), which the listener reaps with its sessions:
    `supervisor.exited(pid, status)` hears of each that ends, and
    `supervisor.tick()` is called at every wake-up and returns the seconds
    until it wants the next call (None: no need).
    """
    _Listener(handler, listeners, max_children, logger, busy_reply, limits, on_hup, tls,
              supervisor).run(on_ready)


def addresses(cfg, section):
    """(host, port, implicit TLS) for the `listen` and `listen_tls` addresses of [SECTION]."""
    keys = getattr(cfg, section)
    found = ([(*hostport.listen_address(a, key=f"[{section}] listen"), False) for a in keys.listen]
             + [(*hostport.listen_address(a, key=f"[{section}] listen_tls"), True) for a in keys.listen_tls])
    if not found:
        raise ConfigError(f"[{section}] listen and listen_tls are both empty")
    return found


def bind(host, port):
    """A listening socket on HOST:PORT, or Fatal with one line: 69 when the address is in use, else 71."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=128, reuse_port=False)
    except OSError as exc:
        status = os.EX_UNAVAILABLE if exc.errno == errno.EADDRINUSE else os.EX_OSERR
        shown = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        raise Fatal(status, f"cannot listen on {shown}: {exc.strerror or exc}") from None
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
