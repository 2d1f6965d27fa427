"""Whole reads and writes at offsets, and the fsyncs that make them durable.

Every change the store makes to a file goes through this module (writes,
truncations, renames, unlinks), called as module attributes, so a test can
kill a process at any one of them (tests/test_faults.py).
"""

import io
import os

CHUNK = 4 << 20


class Writer:
    """Sequential pwrite()s from an offset; short writes retried."""

    def __init__(self, fd, offset):
        self.fd = fd
        self.offset = offset

    def write(self, data):
        pwrite_all(self.fd, data, self.offset)
        self.offset += len(data)


class RangeReader(io.RawIOBase):
    def __init__(self, fd, start, end):
        self.fd = fd
        self.pos = start
        self.end = end

    def readable(self):
        return True

    def readinto(self, buffer):
        n = min(len(buffer), self.end - self.pos)
        if n <= 0:
            return 0
        data = os.pread(self.fd, n, self.pos)
        buffer[:len(data)] = data
        self.pos += len(data)
        return len(data)


def reader(fd, start, end):
    """A buffered binary file over bytes [start, end) of fd, for streaming big messages."""
    return io.BufferedReader(RangeReader(fd, start, end), buffer_size=1 << 16)


def pwrite_all(fd, data, offset):
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def pread_all(fd, length, offset):
    parts = []
    while length > 0:
        chunk = os.pread(fd, min(length, CHUNK), offset)
        if not chunk:
            break
        parts.append(chunk)
        offset += len(chunk)
        length -= len(chunk)
    return b"".join(parts)


def truncate(fd, size):
    os.ftruncate(fd, size)


def rename(src, dst, *, dir_fd=None):
    os.rename(src, dst, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def unlink(path, *, dir_fd=None):
    os.unlink(path, dir_fd=dir_fd)


def copy_into(fd, offset, length, writer):
    while length > 0:
        chunk = os.pread(fd, min(length, CHUNK), offset)
        if not chunk:
            raise OSError("mailbox shrank while being rewritten")
        writer.write(chunk)
        offset += len(chunk)
        length -= len(chunk)


def copy_range(src, src_offset, dst, dst_offset, length):
    while length > 0:
        chunk = os.pread(src, min(length, CHUNK), src_offset)
        if not chunk:
            raise OSError("journal shorter than it says")
        pwrite_all(dst, chunk, dst_offset)
        src_offset += len(chunk)
        dst_offset += len(chunk)
        length -= len(chunk)


def fsync_dir(path, required=True):
    """Make a rename or unlink in `path` durable.

    `required=False` is for a directory we may write but not read, where
    the caller has made the entry durable another way (`syncfs`).
    """
    try:
        fd = os.open(path or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        if required:
            raise
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def syncfs(fd):
    """Flush the whole file system holding FD: what makes a rename durable for a
    process that may not open the directory (a user in the 1733 maildrop)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syncfs(fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def drain(fd):
    """Read a non-blocking descriptor (a signal wake-up pipe) until it is empty."""
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def unlink_quietly(path, *, dir_fd=None):
    """Remove a file if it is there; for clean-ups that must not hide the error being handled."""
    try:
        unlink(path, dir_fd=dir_fd)
    except OSError:
        pass
