"""A per-user cache of mailbox indexes, so a re-scan reads only what is new.

One sqlite3 file per user (in `index_dir`, under the user's home by
default) holds, per mailbox path, the file's identity when it was scanned
(device, inode, size, mtime) plus its last 64 bytes, and the scan result.
`Mailbox.scan()` reuses the result when the file is unchanged, and scans
only the new tail when the file merely grew (same inode, same bytes where
the old end was).  The cache is an optimisation: any error in it is
treated as a miss, never as a failure of the mailbox.
"""

import marshal
import os

_VERSION = 3
_SCHEMA = """CREATE TABLE IF NOT EXISTS mailbox (
    path TEXT PRIMARY KEY, dev INTEGER, ino INTEGER, size INTEGER, mtime_ns INTEGER,
    tail BLOB, data BLOB)"""


class IndexCache:
    """sqlite3 is imported on first use: delivery never needs it."""

    def __init__(self, directory):
        self.path = os.path.join(directory, "index.sqlite")
        self._db = None
        self._directory = directory

    def _connect(self):
        import sqlite3
        if self._db is None:
            os.makedirs(self._directory, mode=0o700, exist_ok=True)
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600))
            self._db = sqlite3.connect(self.path, timeout=5, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
        return self._db

    def load(self, mailbox_path):
        """(key, tail, (messages, imapbase)) or None."""
        import sqlite3

        from .scan import Message
        try:
            row = self._connect().execute(
                "SELECT dev, ino, size, mtime_ns, tail, data FROM mailbox WHERE path = ?",
                (mailbox_path,)).fetchone()
            if row is None:
                return None
            version, tuples, imapbase = marshal.loads(row[5])
            if version != _VERSION:
                return None
            messages = [Message.from_tuple(t) for t in tuples]
            return tuple(row[:4]), row[4], (messages, tuple(imapbase) if imapbase else None)
        except (sqlite3.Error, OSError, ValueError, EOFError, TypeError):
            return None

    def store(self, mailbox_path, key, tail, payload):
        import sqlite3
        messages, imapbase = payload
        try:
            data = marshal.dumps((_VERSION, [m.as_tuple() for m in messages], imapbase))
            # The newest state of the file wins: a slow scan that finishes
            # after another process stored a later state must not undo it.
            self._connect().execute(
                "INSERT INTO mailbox (path, dev, ino, size, mtime_ns, tail, data) VALUES (?,?,?,?,?,?,?) "
                "ON CONFLICT(path) DO UPDATE SET dev=excluded.dev, ino=excluded.ino, size=excluded.size, "
                "mtime_ns=excluded.mtime_ns, tail=excluded.tail, data=excluded.data "
                "WHERE excluded.mtime_ns >= mailbox.mtime_ns OR excluded.ino != mailbox.ino "
                "OR excluded.dev != mailbox.dev",
                (mailbox_path, *key, tail, data))
        except (sqlite3.Error, OSError, ValueError):
            pass
