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


class Pool:
    def __init__(self):
        self.lock = threading.Lock()
        self.idle = {}                   # session key -> (client, last used)

    @contextlib.contextmanager
    def client(self, key, connect):
        """A logged-in client for session KEY: a kept one if there is, else CONNECT()."""
        with self.lock:
            self._close_idle()
            client, _ = self.idle.pop(key, (None, 0))
        if client is None:
            client = connect()
        healthy = False
        try:
            yield client
            healthy = True
        finally:
            if healthy:
                self.keep(key, client)
            else:
                client.logout()

    def keep(self, key, client):
        """Keep CLIENT for session KEY's next request."""
        with self.lock:
            old = self.idle.pop(key, None)
            self.idle[key] = (client, time.monotonic())
            while len(self.idle) > MAX_CONNECTIONS:
                _, (oldest, _) = next(iter(self.idle.items()))
                self.idle.pop(next(iter(self.idle)))
                oldest.logout()
        if old:
            old[0].logout()

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
