"""What a client sees of a stored message.

The store keeps messages with LF line ends and its own bookkeeping headers
(Status, X-Status, X-Keywords, X-UID, X-IMAPbase, X-IMAP, Content-Length).
Like Dovecot, clients never see those headers, every line ends in CRLF,
and nothing else is changed (no From_ unquoting: see store/format.py), as
`served_header` and `served_body` of the store define it for POP3 and
`mail` too.  RFC822.SIZE is the size of exactly those bytes, so it always
equals the length of the BODY[] literal and matches what Dovecot reports
for the same file.

Small messages are converted in memory; big ones are streamed in chunks,
so a session's memory does not grow with the message.
"""

from ..store.format import served_body, served_header

IN_MEMORY_LIMIT = 1 << 20
CHUNK = 1 << 16


class ClientMessage:
    """One message as the client sees it; reads the store only when asked."""

    def __init__(self, mailbox, msg):
        self.mailbox = mailbox
        self.msg = msg
        self._header = None
        self._body = None  # converted body, small messages only
        self._body_size = None

    @property
    def stored_body_size(self):
        return self.msg.end - self.msg.body

    @property
    def header(self):
        if self._header is None:
            self._header = served_header(self.mailbox.read(self.msg, self.msg.header, self.msg.body))
        return self._header

    @property
    def body_size(self):
        if self._body_size is None:
            if self.stored_body_size <= IN_MEMORY_LIMIT:
                self._body_size = len(self.body_bytes())
            else:
                self._body_size = sum(len(c) for c in self.body_chunks())
        return self._body_size

    @property
    def size(self):
        return len(self.header) + self.body_size

    def body_bytes(self):
        """The whole converted body (only for small messages or a bounded part)."""
        if self._body is not None:
            return self._body
        body = served_body(self.mailbox.read(self.msg, self.msg.body, self.msg.end))
        if self.stored_body_size <= IN_MEMORY_LIMIT:
            self._body = body
        return body

    def body_chunks(self):
        """The converted body in chunks; a CR at a chunk edge is handled."""
        if self._body is not None or self.stored_body_size <= IN_MEMORY_LIMIT:
            yield self.body_bytes()
            return
        with self.mailbox.open_range(self.msg, self.msg.body, self.msg.end) as f:
            carry = b""
            while True:
                chunk = f.read(CHUNK)
                if not chunk:
                    break
                chunk = carry + chunk
                carry = b""
                if chunk.endswith(b"\r"):
                    chunk, carry = chunk[:-1], b"\r"
                yield served_body(chunk)
            if carry:
                yield carry

    def chunks(self):
        yield self.header
        yield from self.body_chunks()

    def lines(self):
        """The client-visible message as CRLF-terminated lines (last may lack it)."""
        pending = b""
        for chunk in self.chunks():
            pending += chunk
            cut = pending.rfind(b"\n") + 1
            if cut:
                yield from _split_lines(pending[:cut])
                pending = pending[cut:]
        if pending:
            yield pending

    def range_chunks(self, start, end):
        """Bytes [start, end) of the client view in chunks, read only as far as needed."""
        pos = 0
        for chunk in self.chunks():
            if pos >= end:
                break
            lo, hi = max(start - pos, 0), min(end - pos, len(chunk))
            if lo < hi:
                yield chunk[lo:hi]
            pos += len(chunk)


def _split_lines(data):
    """Split after each LF (bytes.splitlines would also split at a bare CR)."""
    lines = data.split(b"\n")
    last = lines.pop()
    for line in lines:
        yield line + b"\n"
    if last:
        yield last
