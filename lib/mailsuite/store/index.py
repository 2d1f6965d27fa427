"""A per-user cache of mailbox indexes, so a re-scan reads only what is new.

One sqlite3 file per user (in `index_dir`, under the user's home by
default) holds, per mailbox path, the file's identity when it was scanned
(device, inode, size, mtime and ctime: a program that restores a file's
mtime after rewriting it cannot restore its ctime) plus its last 64 bytes,
and the scan result with the mailbox's UID state.  `Mailbox.scan()` reuses
the result when the file is unchanged, scans only the new tail when the
file merely grew (same inode, same bytes where the old end was), and falls
back on the remembered UID state when the file lost its own (a mail reader
deleted the first message, or emptied the file).  The same database keeps
the user's UIDVALIDITY counter, so a value is never given out twice.

The cache is an optimisation: any error in it is treated as a miss, never
as a failure of the mailbox.
"""

import marshal
import os

_VERSION = 4
_SCHEMA = ("CREATE TABLE IF NOT EXISTS mailbox (path TEXT PRIMARY KEY, dev INTEGER, ino INTEGER, size INTEGER, "
           "mtime_ns INTEGER, ctime_ns INTEGER, tail BLOB, data BLOB)",
           "CREATE TABLE IF NOT EXISTS counter (name TEXT PRIMARY KEY, value INTEGER)")


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
            db = sqlite3.connect(self.path, timeout=5, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            if db.execute("PRAGMA user_version").fetchone()[0] != _VERSION:
                db.execute("BEGIN IMMEDIATE")
                if db.execute("PRAGMA user_version").fetchone()[0] != _VERSION:
                    db.execute("DROP TABLE IF EXISTS mailbox")
                    for statement in _SCHEMA:
                        db.execute(statement)
                    db.execute(f"PRAGMA user_version = {_VERSION}")
                db.execute("COMMIT")
            self._db = db
        return self._db

    def load(self, mailbox_path):
        """(key, tail, (messages, imapbase, imapbase_in_file)) or None."""
        import sqlite3

        from .scan import Message
        try:
            row = self._connect().execute(
                "SELECT dev, ino, size, mtime_ns, ctime_ns, tail, data FROM mailbox WHERE path = ?",
                (mailbox_path,)).fetchone()
            if row is None:
                return None
            version, tuples, imapbase, in_file = marshal.loads(row[6])
            if version != _VERSION:
                return None
            messages = [Message.from_tuple(t) for t in tuples]
            return tuple(row[:5]), row[5], (messages, tuple(imapbase) if imapbase else None, in_file)
        except (sqlite3.Error, OSError, ValueError, EOFError, TypeError):
            return None

    def store(self, mailbox_path, key, tail, payload):
        import sqlite3
        messages, imapbase, in_file = payload
        try:
            data = marshal.dumps((_VERSION, [m.as_tuple() for m in messages], imapbase, in_file))
            # The newest state of the file wins: a slow scan that finishes
            # after another process stored a later state must not undo it.
            self._connect().execute(
                "INSERT INTO mailbox (path, dev, ino, size, mtime_ns, ctime_ns, tail, data) VALUES (?,?,?,?,?,?,?,?) "
                "ON CONFLICT(path) DO UPDATE SET dev=excluded.dev, ino=excluded.ino, size=excluded.size, "
                "mtime_ns=excluded.mtime_ns, ctime_ns=excluded.ctime_ns, tail=excluded.tail, data=excluded.data "
                "WHERE excluded.ctime_ns >= mailbox.ctime_ns OR excluded.ino != mailbox.ino "
                "OR excluded.dev != mailbox.dev",
                (mailbox_path, *key, tail, data))
        except (sqlite3.Error, OSError, ValueError):
            pass

    def next_uidvalidity(self, floor):
        """A UIDVALIDITY above every one given before (and at least FLOOR, the time); None if the cache fails."""
        import sqlite3
        try:
            db = self._connect()
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT value FROM counter WHERE name = 'uidvalidity'").fetchone()
                value = max(floor, (row[0] if row else 0) + 1)
                db.execute("INSERT OR REPLACE INTO counter (name, value) VALUES ('uidvalidity', ?)", (value,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return value
        except (sqlite3.Error, OSError):
            return None
