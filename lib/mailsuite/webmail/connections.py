"""IMAP connections kept between requests of a session, when the webmail runs as a server.

Logging in and selecting a 100,000-message mailbox takes our imapd about
half a second; a page fetch takes a tenth of that.  The WSGI server keeps
each session's logged-in connection, with its mailbox selected, for
`IDLE_CLOSE` seconds, so paging costs one NOOP and one FETCH.  Under CGI
every request is a new process and connects afresh (as Roundcube does).
A connection is used by one request at a time; a second concurrent
request of the same session gets a connection of its own.
"""

import contextlib
import threading
import time

IDLE_CLOSE = 120
MAX_CONNECTIONS = 200
WAIT_FOR_BUSY = 5                # seconds a request waits for its session's connection before opening another


class Pool:
    def __init__(self):
        self.lock = threading.Condition()
        self.idle = {}                   # session key -> (client, last used)
        self.busy = set()                # sessions whose connection a request (or deferred work) holds

    @contextlib.contextmanager
    def client(self, key, connect):
        """A logged-in client for session KEY: its kept one (waiting a little while another request of
        the session holds it), else a new one from CONNECT()."""
        with self.lock:
            self._close_idle()
            deadline = time.monotonic() + WAIT_FOR_BUSY
            while key in self.busy and key not in self.idle:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.lock.wait(remaining)
            client, _ = self.idle.pop(key, (None, 0))
            owner = key not in self.busy
            if owner:
                self.busy.add(key)
        healthy = False
        try:
            if client is None:
                client = connect()
            yield client
            healthy = True
        finally:
            if owner and healthy:
                self.keep(key, client)
            else:
                if client is not None:
                    client.logout()
                if owner:
                    with self.lock:
                        self.busy.discard(key)
                        self.lock.notify_all()

    def keep(self, key, client):
        """Keep CLIENT for session KEY's next request."""
        evicted = []
        with self.lock:
            old = self.idle.pop(key, None)
            if old:
                evicted.append(old[0])
            self.idle[key] = (client, time.monotonic())
            self.busy.discard(key)
            while len(self.idle) > MAX_CONNECTIONS:
                oldest = next(iter(self.idle))
                evicted.append(self.idle.pop(oldest)[0])
            self.lock.notify_all()
        for stale in evicted:
            stale.logout()

    def discard(self, key):
        with self.lock:
            client, _ = self.idle.pop(key, (None, 0))
        if client:
            client.logout()

    def _close_idle(self):
        limit = time.monotonic() - IDLE_CLOSE
        for key, (client, used) in list(self.idle.items()):
            if used < limit:
                del self.idle[key]
                client.logout()


class NoPool:
    """CGI: a connection per request, logged out at its end."""

    @contextlib.contextmanager
    def client(self, key, connect):
        client = connect()
        try:
            yield client
        finally:
            client.logout()

    def keep(self, key, client):
        client.logout()

    def discard(self, key):
        pass
