"""What every part of an IMAP session shares: its states, and how a command ends.

A handler raises `No` or `Bad` for the tagged failure (a response code
rides in the text, `[TRYCREATE] ...`), returns `ANSWERED` when it sent its
tagged reply itself, or returns the text of the tagged OK.
"""

import enum
import errno

ANSWERED = object()  # a handler that already sent its tagged reply returns this
EXPUNGE_ISSUED = "[EXPUNGEISSUED] Some messages were already expunged"  # RFC 5530, as Dovecot says it


class State(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


ANY = frozenset(State) - {State.LOGOUT}
NOT_AUTH = frozenset({State.NOT_AUTHENTICATED})
AUTH = frozenset({State.AUTHENTICATED, State.SELECTED})
SELECTED = frozenset({State.SELECTED})


class No(Exception):
    """Tagged NO; the text may start with a response code."""


class Bad(Exception):
    """Tagged BAD."""


# What a failure of the mail storage says to the client (RFC 5530 response codes): the temporary
# ones clearly so, the rest as a server bug with the details left to the log.
STORAGE_ERRORS = {
    errno.ENOSPC: "[UNAVAILABLE] the mail storage is full; try again later",
    errno.EDQUOT: "[OVERQUOTA] the mailbox owner's disk quota is used up",
    errno.EAGAIN: "[UNAVAILABLE] the mailbox is being recovered from an interrupted change; try again later",
}


def storage_failure(exc):
    """The tagged NO text for an OSError of the store."""
    return STORAGE_ERRORS.get(exc.errno, f"[SERVERBUG] {exc.strerror or 'system error'}")
