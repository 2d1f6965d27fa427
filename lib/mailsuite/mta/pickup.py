"""Pickup: move mail from the maildrop into the queue, cleaning it up on the way.

This is the trusted side of local submission.  The sender's identity is
the drop file's owner uid; a -f address from an untrusted user is kept but
marked with X-Authentication-Warning (sendmail's convention).  Cleanup
adds what a message must carry and local programs often leave out:
Received: (every hop leaves one), Date:, Message-ID:, and From: built from
-F or the user's GECOS name; unqualified addresses in From/To/Cc get the
origin domain.  The queue id is the drop file's name, and the queue file
remembers the drop file it came from, so a pickup that dies between the
enqueue and the unlink is repaired by the next one without a duplicate.

One bad drop file never stops the others: whatever is not a regular file
(a symlink, a FIFO, a directory), or fails the request's validation, or
makes the pickup fail in any other way, is moved to the queue's `corrupt/`
directory with one log line (as Postfix does), and the next file is taken.
A .ID.tmp left by a sendmail that died before it said 0 is removed.
"""

import email.utils
import fcntl
import os
import pwd
import stat
import time

from ..core import address as addr
from ..core.headers import read_header
from ..core.users import User, UserDB
from .dropdir import DropError, DropFile, stale_tmp, tmp_name
from .queue import QueueError, new_id, valid_id

QUALIFIED_HEADERS = ("From", "Sender", "Reply-To", "To", "Cc")
FILE_KINDS = {stat.S_IFLNK: "a symlink", stat.S_IFIFO: "a FIFO", stat.S_IFDIR: "a directory",
              stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a device", stat.S_IFBLK: "a device"}


def pickup_all(cfg, queue, logger):
    """Pick up every complete drop file; returns the new queue ids."""
    directory = cfg.mailsuite.maildrop_dir
    try:
        names = sorted(os.listdir(directory))
    except (FileNotFoundError, PermissionError):
        return []
    ids = []
    for name in names:
        if tmp_name(name):
            if stale_tmp(directory, name):
                logger.warning("maildrop/%s: removed: its sendmail ended before the message was accepted", name)
        elif valid_id(name):
            qid = pickup_one(cfg, queue, logger, name)
            if qid:
                ids.append(qid)
    return ids


def pickup_one(cfg, queue, logger, name):
    """Move drop file NAME into the queue; its queue id, or None if not ours to take."""
    directory = cfg.mailsuite.maildrop_dir
    path = os.path.join(directory, name)
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            kind = FILE_KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
            raise DropError(f"maildrop/{name}: uid {st.st_uid}: {kind}")
        drop = DropFile(directory, name)
    except FileNotFoundError:
        return None
    except DropError as exc:                    # not a regular file (now, or after the lstat)
        logger.warning("%s; %s", exc, set_aside(queue, path, name))
        return None
    except OSError as exc:
        logger.warning("maildrop/%s: left for later: %s", name, exc.strerror)
        return None
    try:
        try:
            fcntl.flock(drop.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None                         # its sendmail, or another pickup, has it
        if not drop.linked():
            if os.fstat(drop.fd).st_nlink > 1:
                logger.warning("maildrop/%s: uid %d: file has several hard links; removed",
                               name, drop.owner)
                drop.remove()
            return None
        try:
            return _enqueue(cfg, queue, logger, drop)
        except DropError as exc:
            logger.warning("%s; %s", exc, set_aside(queue, drop.path, name))
        except (QueueError, OSError) as exc:
            logger.warning("maildrop/%s: left for later: %s", name, exc)
        except Exception as exc:                # noqa: BLE001 - one file must not stop the pickup
            logger.error("maildrop/%s: uid %d: cannot be picked up (%s: %s); %s", name, drop.owner,
                         type(exc).__name__, exc, set_aside(queue, drop.path, name))
        return None
    finally:
        drop.close()


def set_aside(queue, path, name):
    """Move PATH into the queue's corrupt/ directory (or remove it): says which, for the log."""
    corrupt = os.path.join(queue.dir, "corrupt")
    try:
        os.makedirs(corrupt, mode=0o700, exist_ok=True)
        target = os.path.join(corrupt, name)
        if os.path.lexists(target):
            target += f".{time.time_ns()}"
        os.rename(path, target)
        return "moved to the corrupt directory"
    except OSError:
        pass
    try:
        os.unlink(path)
        return "removed"
    except OSError as exc:
        return f"left in place: {exc.strerror}"


def _enqueue(cfg, queue, logger, drop):
    request = drop.read_request()
    limit = cfg.delivery.max_message_size
    if limit and drop.stat.st_size - drop.file.tell() > limit:
        raise DropError(f"maildrop/{drop.name}: uid {drop.owner}: message larger than {limit} bytes")
    login, trusted, user = _submitter(cfg, drop.owner, request.get("login"))
    origin = addr.origin_domain(cfg)
    try:
        recipients = [addr.qualify(addr.check(str(r), what="recipient"), origin)
                      for r in request["recipients"]]
        claimed = request.get("sender")
        if claimed is not None:
            claimed = addr.check(addr.strip_brackets(str(claimed)), what="sender")
    except addr.AddressError as exc:
        raise DropError(f"maildrop/{drop.name}: uid {drop.owner}: {exc}") from None
    if not recipients:
        raise DropError(f"maildrop/{drop.name}: uid {drop.owner}: no recipients")
    own = addr.qualify(login, origin)
    sender = own if claimed is None else addr.qualify(claimed, origin)

    qid = drop.name
    if queue.exists(qid):
        existing = queue.load(qid)
        if existing.origin == drop.origin:      # enqueued before a crash: just finish
            drop.remove()
            return None
        qid = new_id()

    header, leftover = read_header(drop.file)
    now = time.time()
    full_name = request.get("full_name") or (user.full_name if user else "")
    if claimed is not None and not trusted and sender.lower() != own.lower():
        header.prepend("X-Authentication-Warning",
                       f"{cfg.hostname}: {login} set sender to {sender or '<>'} using -f")
    _qualify_headers(header, origin)
    if not header.has("From"):
        header.append("From", email.utils.formataddr((full_name, sender or own)))
    if not header.has("Date"):
        header.append("Date", email.utils.formatdate(now, localtime=True))
    if not header.has("Message-ID"):
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(now))
        header.append("Message-ID", f"<{stamp}.{qid}@{cfg.hostname}>")
    received = (f"Received: by {cfg.hostname} (mailsuite, from userid {drop.owner})\n"
                f"\tid {qid}{_for(recipients)}; {email.utils.formatdate(now, localtime=True)}\n")
    data = _Chain([header.to_bytes(), b"\n" if not leftover.startswith(b"\n") else b"", leftover], drop.file)
    dsn = {k: v for k, v in (request.get("dsn") or {}).items() if k in ("ret", "envid", "notify")}
    queue.enqueue(sender, recipients, data, received=received.encode("utf-8", "replace"),
                  client="local", auth_user=login, dsn=dsn, qid=qid, origin=drop.origin,
                  arrival=drop.stat.st_mtime)
    drop.remove()
    logger.info("%s: uid=%d from=<%s>", qid, drop.owner, sender)
    logger.info("%s: %s", qid, _summary(sender, recipients, queue, qid))
    return qid


def _summary(sender, recipients, queue, qid):
    from ..core.log import fields
    return fields(**{"from": f"<{sender}>"}, size=queue.load(qid).size, nrcpt=len(recipients))


def _for(recipients):
    return f"\n\tfor <{recipients[0]}>" if len(recipients) == 1 else ""


def _submitter(cfg, uid, claimed_login):
    """(login name, trusted?, User or None for the GECOS name) of drop file owner UID."""
    users = UserDB(cfg)
    trusted = uid in (0, os.geteuid())
    if cfg.mailsuite.sandbox and claimed_login and users.lookup(str(claimed_login)):
        # every sandbox user is the invoking uid: the login is the only distinction
        user = users.lookup(str(claimed_login))
        return user.name, trusted, user
    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        return f"uid{uid}", trusted, None
    user = users.lookup(pw.pw_name) or User(pw.pw_name, uid, pw.pw_gid, pw.pw_dir, pw.pw_gecos, "")
    return pw.pw_name, trusted or pw.pw_name in cfg.submission.trusted_users, user


def _qualify_headers(header, domain):
    """Give bare local parts in address headers the origin domain."""
    for name in QUALIFIED_HEADERS:
        values = header.get_all(name)
        if len(values) != 1:
            continue
        pairs = email.utils.getaddresses(values)
        if not any(a and "@" not in a for _n, a in pairs):
            continue
        if any(not a for _n, a in pairs):
            continue                              # groups or garbage: leave it alone
        header.replace(name, ", ".join(email.utils.formataddr((n, addr.qualify(a, domain)))
                                       for n, a in pairs))


class _Chain:
    """A file-like reader over some bytes, then the rest of a file."""

    def __init__(self, parts, rest):
        self.parts = [p for p in parts if p]
        self.rest = rest

    def read(self, size=-1):
        if self.parts:
            return self.parts.pop(0)
        return self.rest.read(size)
