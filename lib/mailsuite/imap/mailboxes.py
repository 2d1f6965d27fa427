"""A user's mailbox names and the files behind them.

INBOX is the user's spool; every other mailbox is an mbox file under the
user's mail directory (`~/mail` by default), hierarchy levels are
directories and `/` is the separator — the layout UW imapd, mutt and
Dovecot's `mbox:~/mail:INBOX=/var/mail/%u` share, so users can switch
servers and keep their folders.

Names are confined to the mail directory: empty, `.` and `..` components,
absolute names, dot-files, `*.lock` names and any symbolic link on the way
are refused, and every path is opened without following links.  A mail
directory that resolves into the spool directory (`~/mail` a symlink to
/var/mail), or holds it, is refused whole: its "folders" would be other
users' spools.  Names
travel in modified UTF-7 (RFC 3501 5.1.3) and are stored on disk in the
same form, as Dovecot does.  Subscriptions live in `~/mail/.subscriptions`,
the file Dovecot uses for mbox.
"""

import errno
import os
import re
import stat

from ..core import mutf7
from ..store import mailbox as mbox

SEPARATOR = "/"
SUBSCRIPTIONS = ".subscriptions"
MAX_DEPTH = 16
MAX_NAME = 512
MAX_LISTED = 10000


class MailboxNameError(Exception):
    """A name the user may not use, or a change the hierarchy refuses; the text goes into NO."""


class NoSuchMailbox(Exception):
    pass


# --- the namespace --------------------------------------------------------------


class MailStore:
    """One user's mailboxes: INBOX plus the files in the mail directory."""

    def __init__(self, cfg, user):
        self.cfg = cfg
        self.user = user
        self._mail_dir = cfg.expand_user_path(cfg.imap.mail_dir, user.home)
        self._spool_dir = cfg.mailsuite.spool_dir
        self.special_use = dict(_special_use(cfg.imap.special_use))

    @property
    def mail_dir(self):
        """The folder directory, checked at every use: the user may change a link in its path at any time."""
        real, spool = os.path.realpath(self._mail_dir), os.path.realpath(self._spool_dir)
        if _contains(real, spool) or _contains(spool, real):
            raise MailboxNameError("the mail directory overlaps the spool directory; folders are unavailable")
        return self._mail_dir

    # -- names to paths --

    def check_name(self, name):
        """Components of an acceptable non-INBOX name; MailboxNameError otherwise."""
        if not name or len(name) > MAX_NAME:
            raise MailboxNameError("mailbox name is empty or too long")
        try:
            mutf7.decode(name)
        except ValueError as exc:
            raise MailboxNameError(f"bad mailbox name: {exc}") from None
        parts = name.rstrip(SEPARATOR).split(SEPARATOR)
        if name.startswith(SEPARATOR) or name.startswith("~"):
            raise MailboxNameError("mailbox names are relative to the mail directory")
        if len(parts) > MAX_DEPTH:
            raise MailboxNameError("mailbox hierarchy too deep")
        for part in parts:
            if part in ("", ".", "..") or part.startswith("."):
                raise MailboxNameError("empty, '.' or '..' name components are not allowed")
            if part.endswith(".lock") or "\x00" in part:
                raise MailboxNameError("mailbox names may not end in .lock")
        return parts

    def path_of(self, name):
        """The file of a mailbox, every directory on the way checked for symlinks."""
        if name.upper() == "INBOX":
            return self.user.spool
        parts = self.check_name(name)
        path = self.mail_dir
        for part in parts[:-1]:
            path = os.path.join(path, part)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                break
            if not stat.S_ISDIR(st.st_mode):
                raise MailboxNameError(f"{name}: a level of the name is not a directory")
        return os.path.join(self.mail_dir, *parts)

    def kind(self, name):
        """'file', 'dir' or None; a symlink is refused."""
        path = self.path_of(name)
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat.S_ISLNK(st.st_mode):
            raise MailboxNameError(f"{name}: is a symbolic link; refusing it")
        if stat.S_ISDIR(st.st_mode):
            return "dir"
        if stat.S_ISREG(st.st_mode):
            return "file"
        raise MailboxNameError(f"{name}: not a mailbox")

    def open(self, name):
        """The `mbox.Mailbox` of a selectable mailbox; INBOX may not exist yet."""
        if name.upper() != "INBOX" and self.kind(name) != "file":
            raise NoSuchMailbox(name)
        return open_mbox(self.path_of(name), self.cfg, self.user)

    def open_for_append(self, name):
        """Like open(), but creates a missing INBOX (APPEND/COPY to INBOX)."""
        box = self.open(name)
        if name.upper() == "INBOX" and not box.exists:
            box.create(mode=0o600, uid=self.user.uid, gid=self.user.gid)
        return box

    # -- changes to the hierarchy --

    def create(self, name):
        if name.upper() == "INBOX":
            raise MailboxNameError("INBOX always exists")
        directory = name.endswith(SEPARATOR)
        parts = self.check_name(name)
        path = self.mail_dir
        os.makedirs(self.mail_dir, mode=0o700, exist_ok=True)
        for part in parts[:-1]:
            path = os.path.join(path, part)
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    raise MailboxNameError(f"{name}: a level of the name is a mailbox file") from None
        path = os.path.join(path, parts[-1])
        try:
            if directory:
                os.mkdir(path, 0o700)
            else:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        except FileExistsError:
            raise MailboxNameError("[ALREADYEXISTS] mailbox already exists") from None
        if not directory:
            box = open_mbox(path, self.cfg, self.user)
            try:
                with box.locked():
                    box.start_uid_state()       # a UIDVALIDITY of its own, whatever was here before
            finally:
                box.close()

    def delete(self, name):
        if name.upper() == "INBOX":
            raise MailboxNameError("INBOX cannot be deleted")
        kind = self.kind(name)
        path = self.path_of(name)
        if kind is None:
            raise NoSuchMailbox(name)
        if kind == "dir":
            try:
                os.rmdir(path)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise MailboxNameError("[INUSE] mailbox has inferior hierarchical names") from None
                raise
            return
        box = open_mbox(path, self.cfg, self.user)
        try:
            with box.locked():
                os.unlink(path)
        finally:
            box.close()

    def rename(self, old, new):
        """Rename a mailbox or directory; renaming INBOX moves its messages (RFC 3501 6.3.5)."""
        if new.upper() == "INBOX":
            raise MailboxNameError("[ALREADYEXISTS] INBOX exists")
        if self.kind(new) is not None:
            raise MailboxNameError("[ALREADYEXISTS] target mailbox exists")
        if old.upper() == "INBOX":
            self._move_inbox(new)
            return
        if self.kind(old) is None:
            raise NoSuchMailbox(old)
        parts = self.check_name(new)
        parent = os.path.join(self.mail_dir, *parts[:-1])
        for i in range(1, len(parts)):
            level = os.path.join(self.mail_dir, *parts[:i])
            if not os.path.isdir(level):
                os.mkdir(level, 0o700)
        os.rename(self.path_of(old), os.path.join(parent, parts[-1]))

    def _move_inbox(self, new):
        self.create(new)
        source = self.open("INBOX")
        target = self.open(new)
        try:
            with source.locked(), target.locked():
                index = source.sync()
                for msg in index.messages:
                    target.append(
                        source.read(msg), sender=msg.sender, date=msg.date, flags=msg.flags, keywords=msg.keywords
                    )
                source.sync(expunge=[m.uid for m in index.messages])
        finally:
            source.close()
            target.close()

    # -- listing --

    def all_names(self):
        """(name, kind, has_children) for everything under the mail directory."""
        found = []

        def walk(directory, prefix, depth):
            try:
                entries = sorted(os.scandir(directory), key=lambda e: e.name)
            except OSError:
                return
            for entry in entries:
                if len(found) >= MAX_LISTED:
                    return
                name = entry.name
                if name.startswith(".") or name.endswith(".lock") or name.endswith(".journal"):
                    continue
                try:
                    mutf7.decode(name)
                except ValueError:
                    continue
                full = prefix + name
                if entry.is_symlink():
                    continue
                if entry.is_dir(follow_symlinks=False):
                    index = len(found)
                    found.append([full, "dir", False])
                    if depth < MAX_DEPTH:
                        walk(entry.path, full + SEPARATOR, depth + 1)
                    found[index][2] = len(found) > index + 1
                elif entry.is_file(follow_symlinks=False):
                    found.append([full, "file", False])

        try:
            top = self.mail_dir
        except MailboxNameError:
            return []
        walk(top, "", 1)
        return [tuple(f) for f in found]

    def list(self, reference, pattern):
        """[(attributes, name)] for LIST (RFC 3501 6.3.8) with CHILDREN and SPECIAL-USE."""
        if pattern == "":
            return [(("\\Noselect",), "")]
        full = pattern if pattern.startswith(SEPARATOR) or not reference else _join(reference, pattern)
        matcher = pattern_regex(full)
        result = []
        if re.fullmatch(matcher.pattern, "INBOX", re.I | re.S):
            result.append((("\\HasNoChildren",), "INBOX"))
        for name, kind, children in self.all_names():
            if name.upper() == "INBOX" or not matcher.fullmatch(name):
                continue
            if kind == "dir":
                attrs = ("\\Noselect", "\\HasChildren" if children else "\\HasNoChildren")
            else:
                attrs = ("\\NoInferiors",)
            if name in self.special_use:
                attrs += (self.special_use[name],)
            result.append((attrs, name))
        return result

    def special_use_of(self, name):
        return self.special_use.get(name)

    # -- subscriptions --

    def _subscriptions_path(self):
        return os.path.join(self.mail_dir, SUBSCRIPTIONS)

    def subscriptions(self):
        """Subscribed names; reads Dovecot's plain and version 2 formats."""
        try:
            with open(self._subscriptions_path(), "rb") as f:
                data = f.read(1 << 20)
        except (FileNotFoundError, NotADirectoryError, MailboxNameError):
            return []
        lines = data.decode("utf-8", "replace").split("\n")
        if lines and lines[0].startswith("V\t"):
            lines = [line.replace("\t", SEPARATOR) for line in lines[2:]]
        return [line for line in lines if line]

    def _write_subscriptions(self, names):
        os.makedirs(self.mail_dir, mode=0o700, exist_ok=True)
        path = self._subscriptions_path()
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("".join(n + "\n" for n in names))
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)

    def subscribe(self, name):
        if name.upper() != "INBOX":
            self.check_name(name)
        names = self.subscriptions()
        if name not in names:
            self._write_subscriptions(names + [name])

    def unsubscribe(self, name):
        names = self.subscriptions()
        if name in names:
            self._write_subscriptions([n for n in names if n != name])

    def lsub(self, reference, pattern):
        """[(attributes, name)] for LSUB (RFC 3501 6.3.9), in hierarchy order as Dovecot gives them.

        When the pattern ends in `%`, which stops at the separator, a name
        that does not match under a parent that does brings that parent in,
        flagged \\Noselect when the parent itself is not subscribed.
        """
        full = _join(reference, pattern) if reference else pattern
        matcher = pattern_regex(full)
        parents = full.endswith("%")

        def matches(name):
            return bool(matcher.fullmatch(name)) or (
                name.upper() == "INBOX" and re.fullmatch(matcher.pattern, name, re.I | re.S) is not None)

        subscribed = self.subscriptions()
        tree = {}  # every subscribed name and its ancestors, parents first, in subscription order
        for name in subscribed:
            parts = name.split(SEPARATOR)
            for depth in range(1, len(parts) + 1):
                tree.setdefault(SEPARATOR.join(parts[:depth]), [])
            for depth in range(1, len(parts)):
                tree[SEPARATOR.join(parts[:depth])].append(name)
        chosen = set(subscribed)
        out = []
        for name in _preorder(tree):
            if not matches(name):
                continue
            if name in chosen:
                out.append(((), name))
            elif parents and any(not matches(below) for below in tree[name]):
                out.append((("\\Noselect",), name))
        return out


def _preorder(tree):
    """Names of a {name: [...]} hierarchy, each parent before its children, siblings in first-seen order."""
    children = {}
    roots = []
    for name in tree:
        parent, sep, _ = name.rpartition(SEPARATOR)
        (children.setdefault(parent, []) if sep and parent in tree else roots).append(name)
    stack = list(reversed(roots))
    while stack:
        name = stack.pop()
        yield name
        stack.extend(reversed(children.get(name, ())))


def open_mbox(path, cfg, user):
    """The store's Mailbox for a path, refused unless the user owns it."""
    return mbox.Mailbox(path, cfg, owner=user)


def _contains(directory, path):
    """Whether PATH is DIRECTORY or lies under it (both resolved)."""
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _join(reference, pattern):
    if reference.endswith(SEPARATOR) or pattern.startswith(SEPARATOR):
        return reference + pattern
    return reference + SEPARATOR + pattern


def pattern_regex(pattern):
    """LIST wildcards: `*` matches anything, `%` anything but the separator."""
    parts = []
    for ch in pattern:
        if ch == "*":
            parts.append(".*")
        elif ch == "%":
            parts.append("[^/]*")
        else:
            parts.append(re.escape(ch))
    return re.compile("".join(parts), re.S)


def _special_use(items):
    """`Sent=\\Sent` pairs from the config list."""
    for item in items:
        name, _, flag = item.partition("=")
        if name and flag:
            yield name, flag if flag.startswith("\\") else "\\" + flag
