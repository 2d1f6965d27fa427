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

import os
import selectors
import signal
import socket
import sys

from ..core.config import ConfigError
from . import pool
from .connection import Connection, Limits, PeerGone, SessionLimit
from .tls import tls_context


class _Listener:
    """The parent: accepts, forks, counts and reaps children (by client address too), stops on SIGTERM."""

    def __init__(self, handler, cfg, listeners, max_children, logger, busy_reply, limits, on_hup,
                 supervisor=None, max_use=1):
        self.handler, self.cfg, self.logger = handler, cfg, logger
        self.max_children, self.busy_reply, self.limits = max_children, busy_reply, limits
        self.on_hup = on_hup
        self.supervisor = supervisor
        self.max_use = max_use
        self.children = {}               # pid -> client address (a process per session)
        self.selector = selectors.DefaultSelector()
        self.pool = pool.SessionPool(self._spawn, self.selector) if max_use > 1 else None
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
                _drain(wake_r)           # first: a signal arriving from now on wakes the next select
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
        """The session process of one connection: never returns."""
        status = 0
        try:
            self._leave_the_listener([])
            self._session(client, implicit_tls)
        except BaseException:    # one broken session must not take a traceback into the parent's loop
            self.logger.exception("session failed")
            status = 1
        finally:
            sys.stdout.flush()
            os._exit(status)

    def _spawn(self, channel, inherited):
        """Fork a session process serving the connections sent on CHANNEL (pool.py); its pid."""
        pid = os.fork()
        if pid:
            return pid
        status = 0
        try:
            self._leave_the_listener(inherited + self.pool.channels())
            pool.serve_connections(channel, self._pooled_session, self.max_use)
        except BaseException:
            self.logger.exception("session process failed")
            status = 1
        finally:
            sys.stdout.flush()
            os._exit(status)

    def _pooled_session(self, client, implicit_tls):
        try:
            self._session(client, implicit_tls)
        except Exception:        # noqa: BLE001 - this session is over; the process serves the next
            self.logger.exception("session failed")

    def _leave_the_listener(self, inherited):
        """In a new child: the default signal handling, none of the listener's descriptors."""
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        self.selector.close()
        pool.close_all([sock for sock, _ in self.sockets] + list(self.wake) + inherited)

    def _session(self, client, implicit_tls):
        """One client's session, start to end, in the process serving it."""
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
        while self._processes() or (self.supervisor and not block):
            try:
                pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                if self.pool:
                    for pid in list(self.pool.workers):
                        self.pool.reaped(pid)
                return
            if pid == 0:
                return
            if pid in self.children:
                self.children.pop(pid)
            elif self.pool and self.pool.reaped(pid):
                pass
            elif self.supervisor:
                self.supervisor.exited(pid, status)
            if block:
                return


def serve_forking(handler, cfg, *, listeners, max_children, logger, on_ready=None,
                  busy_reply=None, limits=Limits(), on_hup=None, supervisor=None, max_use=1):
    """Accept on every (host, port, implicit_tls) and run handler(conn) in a child per client.

    With MAX_USE above 1 a session process serves up to that many clients,
    one after another (pool.py); HANDLER must then leave nothing of one
    session to the next, and never change the process's identity.

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
              supervisor, max_use).run(on_ready)


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
