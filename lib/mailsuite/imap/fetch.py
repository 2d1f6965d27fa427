"""FETCH data items for one message (RFC 3501 6.4.5 and 7.4.2).

Each attribute is answered from the cheapest source: FLAGS, UID and
INTERNALDATE from the session's view, RFC822.SIZE from the store's index
(the size of exactly the bytes served), whole-message and top-level HEADER/TEXT sections
without a MIME parse, numbered parts from the part tree.  Message data
goes out as `Stream` literals, so a big message is never held whole.
"""

from .bodystructure import body_structure, envelope, header_fields, parse, select_fields
from .content import ClientMessage
from .response import Stream

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def internal_date(when):
    return f'"{when.day:02d}-{MONTHS[when.month - 1]}-{when.year:04d} {when:%H:%M:%S} +0000"'


def _bytes_value(data, partial):
    if partial:
        origin, count = partial
        data = data[origin : origin + count]
    return Stream(len(data), (data,))


def _range_value(message, start, end, partial):
    if partial:
        origin, count = partial
        start, end = min(start + origin, end), min(start + origin + count, end)
    return Stream(end - start, message.range_chunks(start, end))


class MessageFetcher:
    """Answers fetch attributes for one message; parses only what is asked for."""

    def __init__(self, mailbox, msg):
        self.client = ClientMessage(mailbox, msg)
        self.msg = msg
        self._tree = None

    @property
    def tree(self):
        if self._tree is None:
            self._tree = parse(self.client.lines())
        return self._tree

    def size(self):
        return self.msg.client_size

    def item(self, att):
        """The value of one attribute (not FLAGS/UID, which the session adds)."""
        name = att.name
        if name == "INTERNALDATE":
            return internal_date(self.msg.date)
        if name == "RFC822.SIZE":
            return self.size()
        if name == "ENVELOPE":
            return envelope(header_fields(self.client.header))
        if name == "BODYSTRUCTURE":
            return body_structure(self.tree, extended=True)
        if name == "BODY":
            return body_structure(self.tree, extended=False)
        if name == "RFC822":
            return Stream(self.size(), self.client.chunks())
        if name == "RFC822.HEADER":
            return _bytes_value(self.client.header, None)
        if name == "RFC822.TEXT":
            return Stream(self.client.body_size, self.client.body_chunks())
        return self.section(att.section, att.partial)

    def section(self, section, partial):
        client = self.client
        if not section.part:
            header_len = len(client.header)
            if section.text == "":
                if partial:
                    return _range_value(client, 0, self.size(), partial)
                return Stream(self.size(), client.chunks())
            if section.text == "HEADER":
                return _bytes_value(client.header, partial)
            if section.text == "TEXT":
                return _range_value(client, header_len, header_len + client.body_size, partial)
            return _bytes_value(select_fields(client.header, section.fields, section.text.endswith(".NOT")), partial)
        part = self.tree.find(section.part)
        if part is None:
            return None
        if section.text == "":
            return _range_value(client, part.body_start, part.end, partial)
        if section.text == "MIME":
            return _bytes_value(part.header, partial)
        inner = part.message
        if inner is None:
            return _bytes_value(b"", partial)
        if section.text == "HEADER":
            return _bytes_value(inner.header, partial)
        if section.text == "TEXT":
            return _range_value(client, inner.body_start, inner.end, partial)
        return _bytes_value(select_fields(inner.header, section.fields, section.text.endswith(".NOT")), partial)
