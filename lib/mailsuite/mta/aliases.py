"""The aliases(5) file: local names that stand for other destinations.

    # comment
    postmaster: root
    staff:      alice, bob, carol@example.org
    list:       :include:/etc/mail/list.members
    tickets:    "|/usr/local/bin/ticket --new"
    archive:    /var/mail/archive
    nobody:     /dev/null

A value is a comma-separated list; lines that start with white space
continue the previous entry; names are case-insensitive.  `newaliases`
compiles the file into FILE.db (SQLite, written beside it and renamed into
place) so that a big file is not parsed for every message; when the
database is missing or older than the file, the file itself is read, so a
forgotten `newaliases` never loses mail.  Expansion (recursion, loops,
.forward) is the router's business, not this module's.
"""

import os
import sqlite3


class AliasError(Exception):
    """A syntax error, with file and line."""


def split_items(value):
    """Comma-separated items; commas inside double quotes do not split, and
    inside quotes a backslash escapes the next character."""
    items, current, quoted, escaped = [], [], False, False
    for c in value:
        if escaped:
            current.append(c)
            escaped = False
        elif c == "\\" and quoted:
            current.append(c)
            escaped = True
        elif c == '"':
            quoted = not quoted
            current.append(c)
        elif c == "," and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(c)
    items.append("".join(current))
    return [unquote(item.strip()) for item in items if item.strip()]


def unquote(item):
    """"|cmd \\"x\\"" -> |cmd "x"."""
    if len(item) >= 2 and item[0] == item[-1] == '"':
        out, escaped = [], False
        for c in item[1:-1]:
            if escaped or c != "\\":
                out.append(c)
                escaped = False
            else:
                escaped = True
        return "".join(out)
    return item


def parse(path):
    """{name: [items]} from the aliases file at PATH; raises AliasError on bad lines."""
    entries = {}
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        name, value, start = None, [], 0
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line[0] in " \t":
                if name is None:
                    raise AliasError(f"{path}:{number}: continuation line without an alias")
                value.append(line.strip())
                continue
            if name is not None:
                _add(entries, name, value, path, start)
            key, colon, rest = line.partition(":")
            key = unquote(key.strip()).lower()
            if not colon or not key or any(c in key for c in " \t,\"|/"):
                raise AliasError(f"{path}:{number}: expected 'name: value'")
            name, value, start = key, [rest.strip()], number
        if name is not None:
            _add(entries, name, value, path, start)
    return entries


def _add(entries, name, value, path, number):
    items = split_items(" ".join(value))
    if not items:
        raise AliasError(f"{path}:{number}: alias '{name}' has no value")
    entries[name] = items


def database_path(path):
    return path + ".db"


def compile(path):
    """Write FILE.db from FILE atomically; returns (count, longest, total bytes)."""
    entries = parse(path)
    st = os.stat(path)
    db_path = database_path(path)
    tmp = f"{db_path}.{os.getpid()}.tmp"
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    conn = sqlite3.connect(tmp)
    try:
        with conn:
            conn.execute("CREATE TABLE aliases (name TEXT PRIMARY KEY, items TEXT NOT NULL)")
            conn.execute("CREATE TABLE source (mtime_ns INTEGER, size INTEGER)")
            conn.executemany("INSERT INTO aliases VALUES (?, ?)",
                             ((name, "\n".join(items)) for name, items in entries.items()))
            conn.execute("INSERT INTO source VALUES (?, ?)", (st.st_mtime_ns, st.st_size))
        conn.close()
        os.chmod(tmp, 0o644)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, db_path)
    except BaseException:
        conn.close()
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    lengths = [len(", ".join(items)) for items in entries.values()]
    return len(entries), max(lengths, default=0), sum(lengths)


class Aliases:
    """Lookups in the compiled database when it is current, else in the file."""

    def __init__(self, path):
        self.path = path
        self.owner = None
        self._db = None
        self._entries = None
        if not path:
            self._entries = {}
            return
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self._entries = {}
            return
        self.owner = st.st_uid
        self._db = self._open_current_db(st)
        if self._db is None:
            self._entries = parse(path)

    def _open_current_db(self, st):
        try:
            conn = sqlite3.connect(f"file:{database_path(self.path)}?mode=ro", uri=True)
            row = conn.execute("SELECT mtime_ns, size FROM source").fetchone()
        except sqlite3.Error:
            return None
        if row != (st.st_mtime_ns, st.st_size):
            conn.close()
            return None
        return conn

    def lookup(self, name):
        """The items of alias NAME (lower-cased), or None."""
        name = name.lower()
        if self._entries is not None:
            return self._entries.get(name)
        row = self._db.execute("SELECT items FROM aliases WHERE name = ?", (name,)).fetchone()
        return row[0].split("\n") if row else None

    def close(self):
        if self._db is not None:
            self._db.close()
