"""Session processes that serve one connection after another, as Postfix's smtpd processes do (max_use).

For a short SMTP transaction, forking a process costs more than the
session itself.  So the listener can keep its session processes: it still
accepts every connection and applies every limit itself (sessions in all,
sessions per client address), then hands the accepted socket to an idle
session process over a Unix socket pair (SCM_RIGHTS), forking a new one
only when none is idle.  The process runs the session exactly as a
freshly forked child would (a new Connection, the per-line deadlines, the
login phase and its budget, implicit TLS), says "done", and waits for the
next connection.

What keeps a long-lived session process from carrying one client's
session into another's: each session is a new object graph built from the
configuration (nothing of a session survives it), a process serves at most
`max_use` sessions and then exits (so whatever one session leaked, memory
or a descriptor, is bounded), a spare process idle for MAX_IDLE seconds is
retired, and on SIGHUP every process is retired after its current session
so that new sessions run with the new configuration.  A process that dies
costs the session it was serving, and only that one.

The protocol on the socket pair (SOCK_SEQPACKET): the listener sends one
byte, "T" for an implicit-TLS listener or "P" for plain, with the client's
descriptor attached; the session process answers "d" when it is ready for
another connection, or "q" when it served its last and is exiting.  End
of file either way means the other side is gone: the listener never hands
a connection to a process that is exiting, and a session process whose
listener went away (stopping, retiring it, or killed) exits after the
session it is serving.
"""

import os
import selectors
import socket
import time

MAX_IDLE = 100                 # seconds (Postfix's max_idle)
READY, LAST = b"d", b"q"
IMPLICIT_TLS, PLAIN = b"T", b"P"


class Worker:
    """The listener's view of one session process."""

    __slots__ = ("pid", "channel", "address", "idle_since")

    def __init__(self, pid, channel):
        self.pid = pid
        self.channel = channel           # the listener's end of the socket pair; None once retired
        self.address = None              # the client address while serving, else None
        self.idle_since = None

    @property
    def serving(self):
        return self.address is not None


class SessionPool:
    """The listener's session processes: spawns them, hands them connections, hears when they are free."""

    def __init__(self, spawn, selector):
        """SPAWN(channel, inherited) forks a session process that serves connections arriving on
        CHANNEL (its end of a socket pair) and returns its pid; INHERITED are descriptors the child
        must close.  SELECTOR is the listener's, where the channels are watched."""
        self.spawn = spawn
        self.selector = selector
        self.workers = {}                # pid -> Worker
        self.idle = []                   # Workers waiting for a connection, most recently used last

    def channels(self):
        """The listener's ends of every socket pair: a new child must close them all."""
        return [w.channel for w in self.workers.values() if w.channel is not None]

    def serving(self):
        return sum(1 for w in self.workers.values() if w.serving)

    def serving_from(self, address):
        return sum(1 for w in self.workers.values() if w.address == address)

    def hand_over(self, client, address, implicit_tls):
        """Give CLIENT to an idle session process, or to a new one; False if none could take it."""
        if not self.idle:
            self._hear_all()             # one may have finished since the listener last looked
        while self.idle:
            worker = self.idle.pop()
            if self._send(worker, client, implicit_tls):
                worker.address, worker.idle_since = address, None
                return True
        worker = self._new(client)
        if worker is None or not self._send(worker, client, implicit_tls):
            return False
        worker.address = address
        return True

    def _new(self, client):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid = self.spawn(theirs, [ours, client])
        except OSError:
            ours.close()
            return None
        finally:
            theirs.close()
        worker = self.workers[pid] = Worker(pid, ours)
        self.selector.register(ours, selectors.EVENT_READ, worker)
        return worker

    def _send(self, worker, client, implicit_tls):
        try:
            socket.send_fds(worker.channel, [IMPLICIT_TLS if implicit_tls else PLAIN], [client.fileno()])
            return True
        except OSError:                  # it died meanwhile: forget it, the next one takes the client
            self._close(worker)
            return False

    def _hear_all(self):
        """Hear, without waiting, every process that has written on its channel."""
        for key, _ in self.selector.select(0):
            if isinstance(key.data, Worker) and key.data.channel is not None:
                self.heard(key.data)

    def heard(self, worker):
        """The process wrote on its channel: free again, exiting, or gone."""
        try:
            said = worker.channel.recv(16)
        except OSError:
            said = b""
        worker.address = None
        if said == READY:
            worker.idle_since = time.monotonic()
            self.idle.append(worker)
        else:                            # LAST, or end of file: it is exiting
            self._close(worker)

    def _close(self, worker):
        if worker in self.idle:
            self.idle.remove(worker)
        if worker.channel is not None:
            self.selector.unregister(worker.channel)
            worker.channel.close()
            worker.channel = None

    def retire_all(self):
        """Every process exits after its current session (SIGHUP, stopping)."""
        for worker in list(self.workers.values()):
            self._close(worker)

    def retire_idle(self, now=None):
        """Retire spares idle for MAX_IDLE; the seconds until the next one is due, or None."""
        now = time.monotonic() if now is None else now
        for worker in [w for w in self.idle if now - w.idle_since >= MAX_IDLE]:
            self._close(worker)
        return min((w.idle_since + MAX_IDLE - now for w in self.idle), default=None)

    def reaped(self, pid):
        """A child ended: True if it was one of ours (now forgotten)."""
        worker = self.workers.pop(pid, None)
        if worker is None:
            return False
        self._close(worker)
        return True


def serve_connections(channel, serve, max_use):
    """The session process: serve(client_socket, implicit_tls, finished) for each connection received, at most MAX_USE.

    SERVE calls finished() when the session is over, before it closes the
    client's socket: the listener then hears that this process is free
    before the client can see the close, so a client that reconnects at
    once is served here again (a connection handed over meanwhile waits on
    the channel).  Returns when it served MAX_USE sessions or the listener
    closed the channel."""
    for count in range(1, max_use + 1):
        try:
            message, fds, _flags, _address = socket.recv_fds(channel, 16, 1)
        except OSError:
            return
        if not fds:
            return                       # end of file: the listener retired us
        told = Told(channel, LAST if count == max_use else READY)
        serve(socket.socket(fileno=fds[0]), message == IMPLICIT_TLS, told)
        if not told.heard:
            return


class Told:
    """finished() for one session: tells the listener, once, that the process is free (or exiting)."""

    def __init__(self, channel, message):
        self.channel, self.message = channel, message
        self.sent = self.heard = False

    def __call__(self):
        if self.sent:
            return
        self.sent = True
        try:
            self.channel.send(self.message)
            self.heard = True
        except OSError:                  # the listener is gone: serve no more
            pass


def close_all(descriptors):
    """Close sockets and raw descriptors a new session process inherited but must not keep."""
    for item in descriptors:
        try:
            item.close() if hasattr(item, "close") else os.close(item)
        except OSError:
            pass
