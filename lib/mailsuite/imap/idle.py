"""Waiting in IDLE (RFC 2177) for the client or for the mailbox to change.

The mailbox file is watched with inotify (pyinotify's watch manager, whose
descriptor we read directly), so a delivery by `mail.local` or the MTA is
announced at once; where inotify is unavailable, or events are lost, the
mailbox is looked at every `idle_poll` seconds anyway.
"""

import os
import select
import time

try:
    import pyinotify
except ImportError:  # pragma: no cover - declared as a dependency
    pyinotify = None

WATCHED = 0
if pyinotify is not None:
    WATCHED = pyinotify.IN_MODIFY | pyinotify.IN_CLOSE_WRITE | pyinotify.IN_ATTRIB | pyinotify.IN_DELETE_SELF


class MailboxWatcher:
    def __init__(self, path, poll_interval):
        self.poll_interval = max(poll_interval, 1)
        self.manager = None
        if path and pyinotify is not None:
            try:
                self.manager = pyinotify.WatchManager()
                self.manager.add_watch(path, WATCHED, quiet=False)
            except (OSError, pyinotify.WatchManagerError):
                self.close()

    def wait(self, conn, deadline):
        """'input' when the client sent something, else 'changed' (or a poll tick)."""
        if conn.has_pending_input():
            return "input"
        fds = [conn.fileno()]
        if self.manager is not None:
            fds.append(self.manager.get_fd())
        timeout = max(min(self.poll_interval, deadline - time.monotonic()), 0)
        ready, _, _ = select.select(fds, [], [], timeout)
        if fds[0] in ready:
            return "input"
        if len(fds) > 1 and fds[1] in ready:
            os.read(fds[1], 65536)
        return "changed"

    def close(self):
        if self.manager is not None:
            self.manager.close()
            self.manager = None
