"""A raw IMAP client for tests: every response parsed, nothing hidden, every wait bounded.

imaplib folds untagged responses into a dictionary and loses their order,
which is exactly what the multi-session tests must see (an EXPUNGE before
or after a FETCH, FLAGS before the FETCH that uses a new keyword), so this
client keeps each command's untagged responses in order, parsed:

    ("EXISTS", 3)  ("RECENT", 0)  ("EXPUNGE", 2)  ("FLAGS", ["\\Seen", ...])
    ("FETCH", 2, {"UID": 7, "FLAGS": [...], "BODY[]": b"..."})
    ("SEARCH", [1, 4])  ("OK", "UIDNEXT", "8", "text")  ("STATUS", name, {...})
    ("LIST"/"LSUB", [attributes], name)  ("BYE", "text")  (name, raw tokens) otherwise

It talks to any server that serves one session on its stdin/stdout (our
`imapd --preauth`, Dovecot's `imap` with USER and HOME set), or over TCP
with a LOGIN (`SocketSession`, for a listener such as `imapd -d`).
"""

import os
import re
import select
import socket
import subprocess
import time
from dataclasses import dataclass, field

CODE = re.compile(rb"\[([A-Za-z0-9.-]+)(?: ([^\]]*))?\]\s?")
LITERAL_AT_END = re.compile(rb"\{(\d+)\+?\}\r\n\Z")


class ServerGone(Exception):
    """The server closed the connection or did not answer in time."""


class Protocol(Exception):
    """A response that does not parse."""


@dataclass
class Reply:
    """One command's outcome: its untagged responses in order and the tagged status."""

    untagged: list
    status: str
    code: str = None
    code_args: str = None
    text: str = ""
    started: float = 0.0
    ended: float = 0.0
    raw: list = field(default_factory=list)

    @property
    def ok(self):
        return self.status == "OK"


class Session:
    """One IMAP session over a child process's pipes."""

    def __init__(self, argv, env, timeout=60):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=env, bufsize=0)
        self.timeout = timeout
        self.buffer = b""
        self.counter = 0
        self.greeting = self.read_response(time.monotonic() + timeout)

    @property
    def pid(self):
        return self.proc.pid

    # -- reading --

    def _reading_fd(self):
        return self.proc.stdout.fileno()

    def _fill(self, deadline):
        fd = self._reading_fd()
        left = deadline - time.monotonic()
        if left <= 0:
            raise ServerGone(f"no answer in time; buffered: {self.buffer[-300:]!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            raise ServerGone(f"no answer in time; buffered: {self.buffer[-300:]!r}")
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            raise ServerGone(f"connection closed; buffered: {self.buffer[-300:]!r}")
        self.buffer += chunk

    def _line(self, deadline):
        while b"\r\n" not in self.buffer:
            self._fill(deadline)
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line + b"\r\n"

    def _exactly(self, size, deadline):
        while len(self.buffer) < size:
            self._fill(deadline)
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def read_response(self, deadline):
        """One whole response, literals inline, without the final CRLF."""
        pieces = []
        while True:
            line = self._line(deadline)
            pieces.append(line)
            m = LITERAL_AT_END.search(line)
            if not m:
                return b"".join(pieces)[:-2]
            pieces.append(self._exactly(int(m.group(1)), deadline))

    def has_input(self, wait=0.0):
        if self.buffer:
            return True
        ready, _, _ = select.select([self._reading_fd()], [], [], wait)
        return bool(ready)

    # -- commands --

    def send(self, data):
        try:
            self.proc.stdin.write(data)
        except (BrokenPipeError, OSError) as exc:
            raise ServerGone(f"cannot write: {exc}") from None

    def command(self, text, literal=None, timeout=None):
        """Run one command (`text` without tag); `literal` is sent as a LITERAL+ literal at its end."""
        self.counter += 1
        tag = f"t{self.counter}"
        started = time.monotonic()
        deadline = started + (timeout or self.timeout)
        data = f"{tag} {text}".encode("utf-8", "surrogateescape")
        if literal is not None:
            data += b" {%d+}\r\n" % len(literal) + literal
        self.send(data + b"\r\n")
        return self.collect(tag, started, deadline)

    def collect(self, tag, started, deadline):
        untagged, raw = [], []
        while True:
            response = self.read_response(deadline)
            raw.append(response)
            if response.startswith(b"* "):
                untagged.append(parse_untagged(response[2:]))
                continue
            if response.startswith(b"+"):
                continue
            got, _, rest = response.partition(b" ")
            if got.decode() != tag:
                raise Protocol(f"unexpected response {response[:200]!r}")
            status, _, text = rest.partition(b" ")
            code, args, text = split_code(text)
            return Reply(untagged, status.decode(), code, args, text.decode("utf-8", "replace"), started,
                         time.monotonic(), raw)

    def idle(self, seconds, timeout=None):
        """IDLE for about `seconds`, then DONE; the Reply holds what arrived meanwhile."""
        self.counter += 1
        tag = f"t{self.counter}"
        started = time.monotonic()
        deadline = started + (timeout or self.timeout) + seconds
        self.send(f"{tag} IDLE\r\n".encode())
        untagged, raw = [], []
        while True:  # up to the continuation request
            response = self.read_response(deadline)
            raw.append(response)
            if response.startswith(b"+"):
                break
            if not response.startswith(b"* "):
                got, _, rest = response.partition(b" ")
                status, _, text = rest.partition(b" ")
                code, args, text = split_code(text)
                return Reply(untagged, status.decode(), code, args, text.decode("utf-8", "replace"), started,
                             time.monotonic(), raw)
            untagged.append(parse_untagged(response[2:]))
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            if self.has_input(max(until - time.monotonic(), 0)):
                response = self.read_response(deadline)
                raw.append(response)
                untagged.append(parse_untagged(response[2:]))
        self.send(b"DONE\r\n")
        reply = self.collect(tag, started, deadline)
        reply.untagged[:0] = untagged
        reply.raw[:0] = raw
        return reply

    def close(self):
        """LOGOUT if the server still listens, then wait for the process (killed if it lingers)."""
        try:
            if self.proc.poll() is None:
                self.command("LOGOUT", timeout=10)
        except (ServerGone, Protocol, OSError):
            pass
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class SocketSession(Session):
    """One IMAP session over TCP, logged in with LOGIN; `pid` is the server process serving it, when known.

    SERVER_PID, a callable given the client's (host, port), finds that
    process (a listener's child) for the memory figures.
    """

    def __init__(self, address, user, password, timeout=60, server_pid=None):
        self.sock = socket.create_connection(address, timeout=timeout)
        self.timeout = timeout
        self.buffer = b""
        self.counter = 0
        self.greeting = self.read_response(time.monotonic() + timeout)
        self.login = self.command(f"LOGIN {user} {password}")
        if not self.login.ok:
            raise Protocol(f"LOGIN refused: {self.login.text}")
        self._pid = server_pid(self.sock.getsockname()[:2]) if server_pid else None

    @property
    def pid(self):
        return self._pid

    def _reading_fd(self):
        return self.sock.fileno()

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise ServerGone(f"cannot write: {exc}") from None

    def close(self):
        try:
            self.command("LOGOUT", timeout=10)
        except (ServerGone, Protocol, OSError):
            pass
        self.sock.close()


# --- parsing ---------------------------------------------------------------------


def split_code(text):
    """(code, its arguments, the rest) of `[CODE args] text`."""
    m = CODE.match(text)
    if not m:
        return None, None, text
    return m.group(1).decode().upper(), (m.group(2) or b"").decode("utf-8", "replace"), text[m.end():]


def parse_untagged(data):
    """An untagged response's parts (see the module docstring)."""
    first, _, rest = data.partition(b" ")
    if first.isdigit():
        number = int(first)
        kind, _, rest = rest.partition(b" ")
        kind = kind.decode().upper()
        if kind == "FETCH":
            items = Reader(rest).value()
            return ("FETCH", number, fetch_items(items))
        return (kind, number)
    kind = first.decode().upper()
    if kind in ("OK", "NO", "BAD", "BYE", "PREAUTH"):
        code, args, text = split_code(rest)
        return (kind, code, args, text.decode("utf-8", "replace"))
    if kind in ("FLAGS",):
        return ("FLAGS", [_text(f) for f in Reader(rest).value()])
    if kind == "SEARCH":
        return ("SEARCH", [int(n) for n in rest.split()])
    if kind in ("LIST", "LSUB"):
        reader = Reader(rest)
        attributes, _, name = reader.value(), reader.value(), reader.value()
        return (kind, [_text(a) for a in attributes], _text(name))
    if kind == "STATUS":
        reader = Reader(rest)
        name, values = reader.value(), reader.value()
        return ("STATUS", _text(name), {_text(values[i]).upper(): int(values[i + 1])
                                        for i in range(0, len(values), 2)})
    return (kind, Reader(rest).all() if rest else [])


def fetch_items(items):
    """A FETCH list as {NAME: value}: UID and RFC822.SIZE as int, FLAGS as a list of str."""
    out = {}
    for i in range(0, len(items) - 1, 2):
        name = _text(items[i]).upper()
        value = items[i + 1]
        if name in ("UID", "RFC822.SIZE"):
            value = int(value)
        elif name == "FLAGS":
            value = [_text(f) for f in value]
        out[name] = value
    return out


def _text(value):
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


class Reader:
    """IMAP values: atoms (str), strings and literals (bytes), NIL (None), lists."""

    def __init__(self, data):
        self.data = data
        self.pos = 0

    def all(self):
        out = []
        while self._skip() < len(self.data):
            out.append(self.value())
        return out

    def _skip(self):
        while self.pos < len(self.data) and self.data[self.pos] == 0x20:
            self.pos += 1
        return self.pos

    def value(self):
        self._skip()
        data = self.data
        if self.pos >= len(data):
            raise Protocol(f"value expected at the end of {data[:200]!r}")
        c = data[self.pos:self.pos + 1]
        if c == b"(":
            self.pos += 1
            out = []
            while True:
                self._skip()
                if data[self.pos:self.pos + 1] == b")":
                    self.pos += 1
                    return out
                if self.pos >= len(data):
                    raise Protocol(f"unclosed list in {data[:200]!r}")
                out.append(self.value())
        if c == b'"':
            end = self.pos + 1
            out = bytearray()
            while data[end:end + 1] != b'"':
                if end >= len(data):
                    raise Protocol(f"unclosed string in {data[:200]!r}")
                if data[end:end + 1] == b"\\":
                    end += 1
                out += data[end:end + 1]
                end += 1
            self.pos = end + 1
            return bytes(out)
        if c == b"{":
            m = re.compile(rb"\{(\d+)\+?\}\r\n").match(data, self.pos)
            if not m:
                raise Protocol(f"bad literal in {data[:200]!r}")
            size = int(m.group(1))
            self.pos = m.end() + size
            return data[m.end():self.pos]
        start = self.pos
        depth = 0
        while self.pos < len(data):  # an atom; a [section] inside may hold spaces and parentheses
            ch = data[self.pos:self.pos + 1]
            if ch == b"[":
                depth += 1
            elif ch == b"]":
                depth -= 1
            elif depth == 0 and ch in b" ()":
                break
            self.pos += 1
        if self.pos == start:
            raise Protocol(f"unexpected {c!r} in {data[:200]!r}")
        atom = data[start:self.pos].decode("utf-8", "surrogateescape")
        return None if atom.upper() == "NIL" else atom
