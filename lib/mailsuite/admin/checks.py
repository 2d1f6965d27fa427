"""`mailsuite check`: what an operator should fix before mail goes wrong.

Each check is a function of the configuration that yields one line per
problem, naming the path or setting and what to do.  They only read:
nothing here repairs, locks or writes, so a check is safe beside running
daemons (a port they listen on counts as served, not as taken).
"""

import errno
import os
import socket
import stat

from ..core import hostport
from ..core.users import UserDB
from ..store.scan import SEARCH_FOR_START

MBOX_START = b"From "


def problems(cfg):
    """Every problem found, in the order of the checks."""
    for check in (check_spool_dir, check_spool_files, check_queue, check_maildrop, check_passwd_file,
                  check_ports):
        yield from check(cfg)


def check_spool_dir(cfg):
    spool = cfg.mailsuite.spool_dir
    try:
        st = os.stat(spool)
    except OSError as exc:
        yield f"spool_dir {spool}: {exc.strerror}"
        return
    if not stat.S_ISDIR(st.st_mode):
        yield f"spool_dir {spool}: not a directory"
    elif not cfg.mailsuite.sandbox and not (st.st_mode & 0o1000 or st.st_mode & 0o2020 == 0o2020):
        yield f"spool_dir {spool}: mode {st.st_mode & 0o7777:04o}; want 2775 root:mail or 1777"


def check_spool_files(cfg):
    """Each spool: a regular file of its user's, private, starting with a From_ line."""
    spool = cfg.mailsuite.spool_dir
    try:
        names = sorted(os.listdir(spool))
    except OSError:
        return                                   # check_spool_dir said why
    users = UserDB(cfg)
    for name in names:
        if name.startswith(".") or name.endswith(".lock"):
            continue                             # crash records and dotlocks belong to the store
        path = os.path.join(spool, name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        user = users.lookup(name)
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
            yield f"{path}: not a regular file; deliveries to {name} fail until it is moved away"
            continue
        if user is None:
            yield f"{path}: no user {name!r}; mail there is read by nobody"
            continue
        if st.st_nlink != 1:
            yield f"{path}: {st.st_nlink} hard links; the store refuses it until there is one"
        if not cfg.mailsuite.sandbox and st.st_uid != user.uid:
            yield f"{path}: owned by uid {st.st_uid}, not {name} ({user.uid}); chown {name} {path}"
        if st.st_mode & 0o007:
            yield f"{path}: mode {st.st_mode & 0o777:04o}: others may read it; chmod 600 {path}"
        yield from _mbox_start(path)


def _mbox_start(path):
    """An mbox must start with its first From_ line: name the bytes before it and how to cut them."""
    try:
        with open(path, "rb") as f:
            head = f.read(SEARCH_FOR_START)
    except OSError as exc:
        yield f"{path}: {exc.strerror}"
        return
    if not head or head.startswith(MBOX_START):
        return
    first = head.find(b"\n" + MBOX_START)
    if first < 0:
        yield f"{path}: not an mbox (no From_ line in its first {len(head)} bytes)"
    else:
        yield (f"{path}: {first + 1} bytes before the first From_ line; no program can read it: "
               f"see them with `head -c {first + 1} {path}`, then, with mail stopped, remove them with "
               f"`(umask 077; tail -c +{first + 2} {path} > {path}.new) && chown --reference={path} {path}.new "
               f"&& mv {path}.new {path}`")


def check_queue(cfg):
    queue = cfg.mailsuite.queue_dir
    if not os.path.isdir(queue):
        return                                   # made at the first submission
    st = os.stat(queue)
    if not cfg.mailsuite.sandbox and (st.st_uid != 0 or st.st_mode & 0o077):
        yield f"queue_dir {queue}: owner uid {st.st_uid}, mode {st.st_mode & 0o7777:04o}; want root, 0700"
    corrupt = os.path.join(queue, "corrupt")
    count = len(os.listdir(corrupt)) if os.path.isdir(corrupt) else 0
    if count:
        yield f"{corrupt}: {count} damaged file(s) set aside; read the log, then remove them"
    hold = os.path.join(queue, "hold")
    held = len(os.listdir(hold)) if os.path.isdir(hold) else 0
    if held:
        yield f"{hold}: {held} message(s) held; `mailsuite queue` shows why, `queue release ID` lets one go"


def check_maildrop(cfg):
    drop = cfg.mailsuite.maildrop_dir
    if not os.path.isdir(drop) or cfg.mailsuite.sandbox:
        return
    st = os.stat(drop)
    if st.st_uid != 0 or st.st_mode & 0o7777 != 0o1733:
        yield f"maildrop_dir {drop}: owner uid {st.st_uid}, mode {st.st_mode & 0o7777:04o}; want root, 1733"


def check_passwd_file(cfg):
    path = cfg.mailsuite.passwd_file
    if not path:
        return
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        yield f"passwd_file {path}: {exc.strerror}"
        return
    if mode & 0o077:
        yield f"passwd_file {path}: readable by others; chmod 600 {path}"
    yield from _weak_hashes(cfg, path)


def _weak_hashes(cfg, path):
    """Users whose passwd-file hash was made cheaper than [auth] scrypt_cost."""
    from ..server.passwords import work_of
    wanted = cfg.auth.scrypt_cost
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return
    for line in lines:
        name, _, rest = line.partition(":")
        work = work_of(rest.split(":", 1)[0])
        if work is not None and work < wanted:
            yield (f"passwd_file {path}: {name}'s password hash costs {work:g}, below [auth] scrypt_cost "
                   f"{wanted}; give {name} a new one")


def check_ports(cfg):
    """Every listen address parses, and can be bound or is already served (by our running daemon)."""
    for section in ("smtp", "pop3", "imap"):
        keys = getattr(cfg, section)
        for key in ("listen", "listen_submission", "listen_tls"):
            for address in getattr(keys, key, ()):
                problem = _port_problem(address)
                if problem:
                    yield f"[{section}] {key} {address}: {problem}"


def bind_error(host, port):
    """The OSError a daemon binding HOST:PORT would meet now, or None (the probe socket is closed at once)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        return exc
    return None


def _port_problem(address):
    try:
        host, port = hostport.listen_address(address)
    except hostport.HostPortError:
        return "not HOST:PORT"
    exc = bind_error(host, port)
    if exc is None:
        return None
    if exc.errno == errno.EACCES:
        return "a port below 1024 needs root"
    if exc.errno != errno.EADDRINUSE:
        return exc.strerror
    try:
        socket.create_connection((hostport.LOOPBACK.get(host, host), port), timeout=2).close()
        return None                              # taken, but served: a daemon of ours, presumably
    except OSError:
        return "in use by something that does not answer"

