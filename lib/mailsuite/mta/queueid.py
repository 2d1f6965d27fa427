"""Queue ids: shared by the queue and the maildrop, and cheap to import for sendmail."""

import os
import time


def new_id():
    """Microseconds since the epoch in hex, then 12 random bits.

    Ids sort by arrival, fit a mailq column and are safe as file names."""
    return f"{time.time_ns() // 1000:013X}{int.from_bytes(os.urandom(2), 'big') & 0xFFF:03X}"


def valid_id(text):
    return (isinstance(text, str) and 8 <= len(text) <= 32
            and all(c in "0123456789ABCDEF" for c in text))
