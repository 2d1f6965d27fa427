"""The standalone forking listener: one child process per client connection.

Like UW ipop3d under inetd, a crash or a hostile client affects one
session only, and each child can drop to its user after login.  The
listener caps its children, and those from one address; SIGTERM stops
accepting, SIGHUP calls the daemon's reload, and the daemon's own children
(the SMTP queue runner) are looked after through its supervisor."""

import gc
import importlib
import os
import select
import signal
import socket
import sys

from ..core.config import ConfigError
from .connection import Connection, Limits, PeerGone, SessionLimit
from .tls import tls_context


class _Listener:
    """The parent: accepts, forks, counts and reaps children (by client address too), stops on SIGTERM."""

    def __init__(self, handler, cfg, listeners, max_children, logger, busy_reply, limits, on_hup,
                 supervisor=None, preload=()):
        self.handler, self.cfg, self.logger = handler, cfg, logger
        self.preload = preload
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
            _share_with_children(self.preload)
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
                  busy_reply=None, limits=Limits(), on_hup=None, supervisor=None, preload=()):
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

    PRELOAD names modules the sessions import only when they need them:
    the listener imports them once, so that every child shares them (see
    _share_with_children).
    """
    _Listener(handler, cfg, listeners, max_children, logger, busy_reply, limits, on_hup,
              supervisor, preload).run(on_ready)


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
