"""Server-side webmail sessions, and the login failure counter, in one SQLite file.

The webmail needs the user's IMAP password on every request (it logs in
to IMAP and SMTP as the user), yet must never keep it where one leak gives
it away.  It is split in two, as Roundcube does: the server keeps the
password XORed with a random pad as long as the (padded) password, the
browser keeps the pad in its session cookie.  A one-time pad needs no
cryptographic library and cannot be broken: the database alone, or the
cookie alone, says nothing about the password.  The cookie also carries
the session id, which the database stores only as a SHA-256, so a copy of
the database cannot be used to take over sessions either.

Sessions end after `session_idle` without a request, after
`session_lifetime` in all, and at logout (the row is deleted, so the pad
in the browser becomes useless).
"""

import base64
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import time
from dataclasses import dataclass

PAD_BLOCK = 64                      # passwords are padded to a multiple of this before the XOR
MAX_PASSWORD = 512

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id_hash TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    sealed BLOB NOT NULL,
    csrf TEXT NOT NULL,
    created REAL NOT NULL,
    seen REAL NOT NULL,
    data TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS failures (
    key TEXT PRIMARY KEY,
    count INTEGER NOT NULL,
    first REAL NOT NULL
);
"""


@dataclass
class Session:
    key: str                        # the SHA-256 of the session id: what the server knows it by
    user: str
    password: str
    csrf: str
    created: float
    data: dict


def _b64(data):
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def seal(password):
    """(stored, pad): the padded password XOR a fresh random pad of the same length, and the pad."""
    raw = password.encode("utf-8")
    if len(raw) > MAX_PASSWORD:
        raise ValueError("password too long")
    framed = len(raw).to_bytes(2, "big") + raw
    framed += secrets.token_bytes(-len(framed) % PAD_BLOCK)
    pad = secrets.token_bytes(len(framed))
    return bytes(a ^ b for a, b in zip(framed, pad)), pad


def unseal(stored, pad):
    """The password from the stored half and the cookie's pad; None when they do not belong together."""
    if len(stored) != len(pad) or not stored:
        return None
    framed = bytes(a ^ b for a, b in zip(stored, pad))
    length = int.from_bytes(framed[:2], "big")
    if length > len(framed) - 2:
        return None
    try:
        return framed[2:2 + length].decode("utf-8")
    except UnicodeDecodeError:
        return None


class Store:
    """The sessions database; one connection per request (CGI) or per thread (the WSGI server)."""

    def __init__(self, path, *, idle, lifetime, max_failures, failure_window):
        self.path = path
        self.idle, self.lifetime = idle, lifetime
        self.max_failures, self.failure_window = max_failures, failure_window
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)    # sealed passwords: owner only, from creation
        os.close(fd)
        with self._connect() as db:
            db.executescript(SCHEMA)

    def _connect(self):
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    # --- sessions ---

    def create(self, user, password):
        """A new session; returns (cookie value, Session)."""
        sealed, pad = seal(password)
        sid = secrets.token_bytes(32)
        key = hashlib.sha256(sid).hexdigest()
        now = time.time()
        csrf = secrets.token_urlsafe(32)
        with self._connect() as db:
            db.execute("INSERT INTO sessions (id_hash, user, sealed, csrf, created, seen) VALUES (?, ?, ?, ?, ?, ?)",
                       (key, user, sealed, csrf, now, now))
            db.execute("DELETE FROM sessions WHERE seen < ? OR created < ?", (now - self.idle, now - self.lifetime))
        return f"{_b64(sid)}.{_b64(pad)}", Session(key, user, password, csrf, now, {})

    def load(self, cookie):
        """The live Session the cookie names, touched; None for a missing, expired or forged cookie."""
        try:
            sid_text, pad_text = cookie.split(".", 1)
            sid, pad = _unb64(sid_text), _unb64(pad_text)
        except (ValueError, AttributeError):
            return None
        key = hashlib.sha256(sid).hexdigest()
        now = time.time()
        with self._connect() as db:
            row = db.execute("SELECT user, sealed, csrf, created, seen, data FROM sessions WHERE id_hash = ?",
                             (key,)).fetchone()
            if row is None:
                return None
            user, sealed, csrf, created, seen, data = row
            if seen < now - self.idle or created < now - self.lifetime:
                db.execute("DELETE FROM sessions WHERE id_hash = ?", (key,))
                return None
            password = unseal(sealed, pad)
            if password is None:
                return None
            if now - seen > 5:                       # one write per few seconds, not per request
                db.execute("UPDATE sessions SET seen = ? WHERE id_hash = ?", (now, key))
        return Session(key, user, password, csrf, created, json.loads(data))

    def save_data(self, session):
        with self._connect() as db:
            db.execute("UPDATE sessions SET data = ? WHERE id_hash = ?", (json.dumps(session.data), session.key))

    def delete(self, session):
        with self._connect() as db:
            db.execute("DELETE FROM sessions WHERE id_hash = ?", (session.key,))

    # --- login failures ---

    def _failure_keys(self, user, address):
        return [f"user:{user.lower()}", f"addr:{address}"]

    def locked_out(self, user, address):
        """Whether USER or ADDRESS has failed `max_failures` times within the window."""
        now = time.time()
        with self._connect() as db:
            db.execute("DELETE FROM failures WHERE first < ?", (now - self.failure_window,))
            for key in self._failure_keys(user, address):
                row = db.execute("SELECT count FROM failures WHERE key = ?", (key,)).fetchone()
                if row and row[0] >= self.max_failures:
                    return True
        return False

    def record_failure(self, user, address):
        now = time.time()
        with self._connect() as db:
            for key in self._failure_keys(user, address):
                db.execute("INSERT INTO failures (key, count, first) VALUES (?, 1, ?) "
                           "ON CONFLICT(key) DO UPDATE SET count = count + 1", (key, now))

    def clear_failures(self, user):
        with self._connect() as db:
            db.execute("DELETE FROM failures WHERE key = ?", (f"user:{user.lower()}",))


def same(a, b):
    """Constant-time comparison of two tokens."""
    return hmac.compare_digest(str(a).encode(), str(b).encode())
