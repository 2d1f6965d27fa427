"""A mailbox delivery that a crash cannot make twice.

A delivery worker appends a message to a mailbox and then records "sent"
in the queue file.  Killed between the two, it would leave a message that
the next attempt delivers again.  So, under the mailbox locks and just
before appending, the worker records where the message is about to go
(device, inode, offset); the next attempt, under the same locks, looks
there first: if it finds this very message (a From_ line, then exactly the
lines this delivery writes, the message's own header included), the
delivery had happened and is recorded as sent instead of being repeated.
Anything else at that place (nothing, another message, a mailbox rewritten
meanwhile) means deliver again: at worst a rare duplicate, never a loss.
"""

import os

MAX_SEPARATOR = 2              # newlines the store may write before a From_ line


class AppendOnce:
    """For one mailbox target of one recipient: RECORD(**fields) appends a queue
    record for it; PREVIOUS is its last record when that was "appending"."""

    def __init__(self, record, previous=None):
        self.record = record
        self.previous = previous

    def found(self, fd, head):
        """Whether the append the previous attempt announced is in the mailbox open on FD.

        HEAD is what the delivery writes after the From_ line (its own lines,
        then the message's header)."""
        previous = self.previous
        if not previous:
            return False
        st = os.fstat(fd)
        offset = previous.get("offset")
        if [st.st_dev, st.st_ino] != [previous.get("dev"), previous.get("ino")] \
                or not isinstance(offset, int) or st.st_size <= offset:
            return False
        data = os.pread(fd, MAX_SEPARATOR + len(head) + 4096, offset)
        for _ in range(MAX_SEPARATOR):
            if data.startswith(b"\n"):
                data = data[1:]
        end_of_from_line = data.find(b"\n")
        return data.startswith(b"From ") and end_of_from_line > 0 \
            and data[end_of_from_line + 1:].startswith(head)

    def appending(self, fd, offset=None):
        """Record where the message is about to be appended: at OFFSET, by default the end of the file."""
        st = os.fstat(fd)
        self.record(s="appending", dev=st.st_dev, ino=st.st_ino, offset=st.st_size if offset is None else offset)
