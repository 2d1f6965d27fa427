"""The standalone listener: one child process per client connection, or session processes reused.

Like UW ipop3d under inetd, a crash or a hostile client affects one
session only, and each child can drop to its user after login.  The
listener caps its sessions, and those from one address; SIGTERM stops
accepting, SIGHUP calls the daemon's reload, and the daemon's own children
(the SMTP queue runner) are looked after through its supervisor.

With `max_use` above 1 (SMTP, whose sessions never change identity), a
session process serves up to that many connections one after another
(pool.py), as Postfix's smtpd does, instead of a fork per connection; the
accepting and every limit stay here."""

import errno
import gc
import importlib
import os
import selectors
import signal
import socket

from ..core import children, fileio, hostport
from ..core.config import ConfigError
from ..core.errors import Fatal
from . import connection, pool
from .connection import Connection, Limits, PeerGone, SessionLimit


class _Listener:
    """The parent: accepts, forks, counts and reaps children (by client address too), stops on SIGTERM."""

    def __init__(self, handler, listeners, max_children, logger, busy_reply, limits, on_hup, tls,
                 supervisor=None, max_use=1, preload=()):
        self.handler, self.logger = handler, logger
        self.preload = preload
        self.max_children, self.busy_reply, self.limits = max_children, busy_reply, limits
        self.on_hup = on_hup
        self.supervisor = supervisor
        self.max_use = max_use
        self.children = {}               # pid -> client address (a process per session)
        self.selector = selectors.DefaultSelector()
        self.pool = pool.SessionPool(self._spawn, self.selector) if max_use > 1 else None
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
            _share_with_children((*connection.LOADED_LATER, *self.preload))
            self._accept_loop(wake_r)
            for sock, _ in self.sockets:
                self.selector.unregister(sock)
                sock.close()
            if self.pool:
                self.pool.retire_all()
            self.logger.info("stopped accepting; waiting for %d session(s)", self._sessions())
            while self._processes():
                self._reap(block=True)
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, h in previous.items():
                signal.signal(sig, h)
            self.selector.close()
            os.close(wake_r)
            os.close(wake_w)

    def _sessions(self):
        return self.pool.serving() if self.pool else len(self.children)

    def _sessions_from(self, address):
        if self.pool:
            return self.pool.serving_from(address)
        return sum(1 for other in self.children.values() if other == address)

    def _processes(self):
        return len(self.pool.workers) if self.pool else len(self.children)

    def _on_signal(self, signum, frame):
        if signum in (signal.SIGTERM, signal.SIGINT):
            self.stopping = True
        elif signum == signal.SIGHUP:
            self.hangup = True

    def _accept_loop(self, wake_r):
        self.selector.register(wake_r, selectors.EVENT_READ, "wake")
        for sock, implicit in self.sockets:
            self.selector.register(sock, selectors.EVENT_READ, ("listen", sock, implicit))
        while not self.stopping:
            ready = self.selector.select(self._timeout())
            if any(key.data == "wake" for key, _ in ready):
                fileio.drain(wake_r)           # first: a signal arriving from now on wakes the next select
            self._reap(block=False)
            if self.hangup:
                self.hangup = False
                if self.on_hup:
                    self.on_hup()
                if self.pool:            # new sessions run with the new configuration
                    self.pool.retire_all()
            if self.stopping:
                break
            for key, _ in ready:
                if isinstance(key.data, pool.Worker):
                    if key.data.channel is not None:
                        self.pool.heard(key.data)
            for key, _ in ready:
                if isinstance(key.data, tuple):
                    self._accept(*key.data[1:])
        self.selector.unregister(wake_r)

    def _timeout(self):
        """Seconds until the supervisor or the pool wants a call, None for never."""
        waits = [self.supervisor.tick() if self.supervisor else None,
                 self.pool.retire_idle() if self.pool else None]
        waits = [w for w in waits if w is not None]
        return max(0.0, min(waits)) if waits else None

    def _accept(self, listener, implicit_tls):
        try:
            client, address = listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as exc:       # EMFILE and friends: keep serving the others
            self.logger.warning("accept: %s", exc)
            return
        if self._sessions() >= self.max_children:
            self.logger.warning("too many sessions (%d); refused %s", self._sessions(), address[0])
            _refuse(client, self.busy_reply)
            return
        if self.limits.per_address:
            from_there = self._sessions_from(address[0])
            if from_there >= self.limits.per_address:
                self.logger.warning("too many sessions from %s (%d); refused", address[0], from_there)
                _refuse(client, self.busy_reply)
                return
        if self.pool:
            if not self.pool.hand_over(client, address[0], implicit_tls):
                self.logger.error("no session process could take %s", address[0])
                _refuse(client, self.busy_reply)
                return
            client.close()
            return
        try:
            pid = children.fork_child(lambda: self._one_session(client, implicit_tls), self.logger, "session")
        except OSError as exc:
            self.logger.error("fork: %s", exc)
            _refuse(client, self.busy_reply)
            return
        self.children[pid] = address[0]
        client.close()

    def _one_session(self, client, implicit_tls):
        """The process of one connection, after the fork."""
        self._leave_the_listener()
        self._session(client, implicit_tls)

    def _spawn(self, channel, inherited):
        """Fork a session process serving the connections sent on CHANNEL (pool.py); its pid."""
        return children.fork_child(lambda: self._serve_pooled(channel, inherited), self.logger, "session process")

    def _serve_pooled(self, channel, inherited):
        self._leave_the_listener(inherited + self.pool.channels())
        pool.serve_connections(channel, self._pooled_session, self.max_use)

    def _pooled_session(self, client, implicit_tls, finished):
        try:
            self._session(client, implicit_tls, finished)
        except Exception:        # noqa: BLE001 - this session is over; the process serves the next
            self.logger.exception("session failed")
        finished()

    def _leave_the_listener(self, inherited=()):
        """In a new child (whose signal handling fork_child undid): none of the listener's descriptors."""
        self.selector.close()
        pool.close_all([sock for sock, _ in self.sockets] + list(self.wake) + list(inherited))

    def _session(self, client, implicit_tls, finished=None):
        """One client's session, start to end, in the process serving it; FINISHED() (pool.py) before the close."""
        conn = Connection(sock=client, timeout=self.limits.line_timeout)
        try:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            conn.start_login_phase(self.limits)
            if implicit_tls:
                conn.starttls(self.tls)
            self.handler(conn)
        except (PeerGone, SessionLimit):
            pass
        finally:
            if finished:
                finished()
            conn.close()

    def _reap(self, block):
        """Forget the session processes that ended; tell the supervisor of its own children."""
        if not self._processes() and (block or not self.supervisor):
            return                              # never block on the supervisor's long-lived child
        ended = children.reap(block)
        if ended is None:
            self.children.clear()
            for pid in list(self.pool.workers) if self.pool else ():
                self.pool.reaped(pid)
            return
        for pid, status in ended:
            if self.children.pop(pid, None) is not None or (self.pool and self.pool.reaped(pid)):
                continue
            if self.supervisor:
                self.supervisor.exited(pid, status)


def serve_forking(handler, *, listeners, max_children, logger, tls=None, on_ready=None,
                  busy_reply=None, limits=Limits(), on_hup=None, supervisor=None, max_use=1,
                  preload=()):
    """Accept on every (host, port, implicit_tls) and run handler(conn) in a child per client.

    TLS is the context for the implicit TLS addresses, loaded once by the
    daemon before any fork.  With MAX_USE above 1 a session process serves
    up to that many clients, one after another (pool.py); HANDLER must then
    leave nothing of one session to the next, and never change the
    process's identity.

    Beyond MAX_CHILDREN live sessions, or `limits.per_address` from the
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

    PRELOAD names modules the sessions import only when they need them:
    the listener imports them once, so that every child shares them (see
    _share_with_children).
    """
    _Listener(handler, listeners, max_children, logger, busy_reply, limits, on_hup, tls,
              supervisor, max_use, preload).run(on_ready)


def _share_with_children(preload):
    """Import what sessions will use, then freeze the objects made so far, before the first fork.

    A forked child shares the listener's memory until it writes to it, and
    the cyclic collector writes to every object it examines: frozen objects
    are never examined, so their pages stay shared (and a login imports
    nothing).  This is done once, at start-up: objects the listener makes
    later stay collectable.
    """
    for module in preload:
        importlib.import_module(module)
    gc.collect()
    gc.freeze()


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
