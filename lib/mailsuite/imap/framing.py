"""Reading IMAP commands off the wire: lines and their literals (RFC 3501 4.3, RFC 7888 LITERAL+).

A command is one line, or a line that ends announcing a literal: `{n}`
asks for a continuation request before the client sends the n bytes,
`{n+}` does not.  Every line and literal is bounded (`max_line_length`,
`max_command_size`; before login a literal is held to the latter, so a
stranger cannot make a root session spool a large APPEND), and the literal
of an APPEND bigger than SPOOL_LITERAL waits in a temporary file instead
of memory.  A client that keeps sending bad lines is disconnected.
"""

import re

from ..server import connection
from ..store.prepare import temporary_file
from . import parser
from .states import AUTH, State

SPOOL_LITERAL = 256 << 10  # APPEND literals bigger than this wait in a temporary file
SPOOL_CHUNK = 64 << 10
_LITERAL_AT_END = re.compile(rb"\{(\d{1,20})(\+?)\}\r?\n\Z")


class Framing:
    """The part of a Session that reads commands; mixed into Session (session.py)."""

    def read_command(self):
        """One command's bytes with literals inline, or None after answering a framing error.

        A big APPEND literal goes to a temporary file instead (see `self.spooled`),
        so a 50 MB message costs a session no more memory than a small one.
        """
        imap = self.cfg.imap
        pieces = []
        total = 0
        self.spooled = {}
        while True:
            try:
                line = self.conn.readline(imap.max_line_length)
            except connection.LineTooLong:
                self.bad_line(b"".join(pieces), "line too long")
                return None
            total += len(line)
            m = _LITERAL_AT_END.search(line)
            if not m:
                pieces.append(line.rstrip(b"\r\n"))
                return b"".join(pieces)
            size, non_sync = int(m.group(1)), bool(m.group(2))
            head = b"".join(pieces) + line
            appending = self._is_append(head) and self.state in AUTH     # before login, no message is taken
            limit = imap.max_message_size if appending else imap.max_command_size
            if size > limit or total + size > max(limit, imap.max_command_size) + imap.max_line_length:
                if non_sync:
                    self.send_line("* BYE literal too large")
                    self.state = State.LOGOUT
                    return None
                tag = parser.parse_tag(head) or "*"
                self.tagged(tag, "NO", "[TOOBIG] literal too large")
                return None
            if not non_sync:
                self.send_line("+ Ready for literal data")
            marker = line[: m.end(2) + 1] + b"\r\n"
            if size > SPOOL_LITERAL and limit == imap.max_message_size:
                self.spooled[sum(map(len, pieces)) + m.start()] = self.spool_literal(size)
                pieces.append(line[: m.start()] + b"{0}\r\n")
            else:
                pieces.append(marker)
                pieces.append(self.conn.read_exact(size))
            total += size

    def spool_literal(self, size):
        spool = temporary_file()
        left = size
        while left:
            chunk = self.conn.read_exact(min(left, SPOOL_CHUNK))
            spool.write(chunk)
            left -= len(chunk)
        spool.seek(0)
        return spool

    @staticmethod
    def _is_append(head):
        return re.match(rb"[^ ]+ APPEND ", head, re.I) is not None

    def bad_line(self, head, text):
        tag = parser.parse_tag(head) if head else None
        self.tagged(tag or "*", "BAD", text)
        self.count_bad()

    def count_bad(self):
        self.bad_in_a_row += 1
        if self.bad_in_a_row >= self.cfg.imap.max_bad_commands:
            self.send_line("* BYE too many invalid commands")
            self.state = State.LOGOUT
