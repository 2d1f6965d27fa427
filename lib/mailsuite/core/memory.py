"""Giving back to the system the memory that a burst of work has freed.

A process that has parsed a big mailbox frees the objects of the parse,
but glibc's malloc gives a heap's free pages back to the system only from
its top: the rest stays in the process, a session's memory long after
the work is done.  `release_freed()` asks glibc (malloc_trim) to give back
every whole free page wherever it lies; with another C library it does
nothing.
"""

import ctypes


def _malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _malloc_trim()


def release_freed():
    """Return the free pages of the C heap to the system (a few milliseconds for tens of MiB)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
