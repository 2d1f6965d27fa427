"""Where a recipient's mail goes: aliases, then ~/.forward, then the mailbox.

`Router.resolve()` turns one envelope recipient into the final delivery
targets: a user's mailbox, a file, a command, or a remote address.  Problems
inside an expansion (an unknown member, a loop, a forbidden command) become
`error` targets, so the other members of a list still get their copy and
the sender's bounce names the one that failed.

Security: commands and files come only from the aliases file, its
:include: files and users' .forward files, never from an address; each runs
as the owner of the file that named it (`default_privs` instead of root),
and a .forward or :include: file that others could write is ignored.
"""

import os
import pwd
import stat
from dataclasses import dataclass

from . import address as addr
from .aliases import Aliases, split_items
from .users import UserDB

MAX_DEPTH = 20


class RouteError(Exception):
    """A temporary problem resolving a recipient (unreadable aliases file...)."""

    def __init__(self, dsn, reason):
        super().__init__(reason)
        self.dsn = dsn
        self.reason = reason


@dataclass(frozen=True)
class RunAs:
    """The identity a command or file delivery runs with."""

    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class Target:
    kind: str              # mailbox | file | command | remote | error
    value: str             # user name | path | command | address | reason
    run_as: RunAs | None = None    # None: as this process (the sandbox, or not root)
    user: object = None    # mailbox: the users.User
    via: str = ""          # where it was found, for logs and bounces
    dsn: str = ""          # error targets: the enhanced status code

    @property
    def key(self):
        uid = self.run_as.uid if self.run_as else ""
        if self.kind in ("command", "file"):
            return f"{self.kind}:{uid}:{self.value}"
        return f"{self.kind}:{self.value}"


class Router:
    def __init__(self, cfg, *, users=None, aliases=None):
        self.cfg = cfg
        self.users = users or UserDB(cfg)
        self.aliases = aliases if aliases is not None else Aliases(cfg.queue.aliases)
        self.switch_users = os.geteuid() == 0 and not cfg.mailsuite.sandbox

    def resolve(self, recipient):
        """The Targets for RECIPIENT (deduplicated, in order)."""
        if not addr.is_local(self.cfg, recipient):
            return [Target("remote", recipient)]
        local, _domain = addr.split(recipient)
        out = {}
        self._local(local, (), out, via="")
        return list(out.values())

    # --- expansion -----------------------------------------------------

    def _local(self, name, chain, out, *, via):
        lname = name.lower()
        if lname in chain:
            return self._error(out, name, "5.4.6", f"mail forwarding loop for {name}", via)
        if len(chain) >= MAX_DEPTH:
            return self._error(out, name, "5.4.6", f"alias expansion of {name} too deep", via)
        chain = chain + (lname,)
        items = self.aliases.lookup(lname)
        if items is not None:
            owner = self._owner_run_as(self.aliases.owner)
            for item in items:
                self._item(item, chain, out, owner=owner, self_name=lname, via=f"alias {lname}")
            return None
        user = self.users.lookup(name)
        if user is None:
            return self._error(out, name, "5.1.1", f"{name}: user unknown", via)
        forward = self._forward(user)
        if not forward:
            out.setdefault(f"mailbox:{user.name}", Target("mailbox", user.name, user=user, via=via))
            return None
        owner = self._user_run_as(user)
        for item in forward:
            self._item(item, chain, out, owner=owner, self_name=user.name.lower(),
                       via=f"{user.name}'s forward file")
        return None

    def _item(self, item, chain, out, *, owner, self_name, via):
        if item.startswith("|"):
            if not self.cfg.queue.allow_commands:
                return self._error(out, item, "5.7.1", "command deliveries are disabled", via)
            target = Target("command", item[1:].strip(), run_as=owner, via=via)
            out.setdefault(target.key, target)
        elif item.startswith("/"):
            if not self.cfg.queue.allow_files:
                return self._error(out, item, "5.7.1", "file deliveries are disabled", via)
            target = Target("file", os.path.normpath(item), run_as=owner, via=via)
            out.setdefault(target.key, target)
        elif item.lower().startswith(":include:"):
            self._include(item[len(":include:"):].strip(), chain, out, self_name=self_name, via=via)
        elif item.startswith("\\"):
            self._mailbox(item[1:], out, via)
        else:
            try:
                address = addr.check(addr.strip_brackets(item), what="alias member")
            except addr.AddressError as exc:
                return self._error(out, item, "5.1.3", str(exc), via)
            if not addr.is_local(self.cfg, address):
                out.setdefault(f"remote:{address}", Target("remote", address, via=via))
                return None
            local, _domain = addr.split(address)
            if local.lower() == self_name:
                self._mailbox(local, out, via)     # "bob: bob, archive" keeps a copy
            else:
                self._local(local, chain, out, via=via)
        return None

    def _mailbox(self, name, out, via):
        user = self.users.lookup(name)
        if user is None:
            return self._error(out, name, "5.1.1", f"{name}: user unknown", via)
        out.setdefault(f"mailbox:{user.name}", Target("mailbox", user.name, user=user, via=via))
        return None

    def _include(self, path, chain, out, *, self_name, via):
        try:
            owner_uid, text = _read_safe(path, trusted_uids=None)
        except OSError as exc:
            raise RouteError("4.3.0", f":include:{path}: {exc.strerror}") from None
        except _Unsafe as exc:
            return self._error(out, path, "5.3.0", f":include:{path}: {exc}", via)
        owner = self._owner_run_as(owner_uid)
        for item in _items_of(text):
            self._item(item, chain, out, owner=owner, self_name=self_name, via=f":include:{path}")
        return None

    def _forward(self, user):
        """The items of USER's forward file, or None when there is none usable."""
        template = self.cfg.queue.forward_file
        if not template or not user.home:
            return None
        path = self.cfg.expand_user_path(template, user.home)
        try:
            _uid, text = _read_safe(path, trusted_uids=(user.uid, 0))
        except FileNotFoundError:
            return None
        except (OSError, _Unsafe):
            return None        # unreadable or unsafe: deliver to the mailbox
        return _items_of(text) or None

    def _error(self, out, what, dsn, reason, via):
        out.setdefault(f"error:{what}", Target("error", reason, via=via, dsn=dsn))

    # --- identities ----------------------------------------------------

    def _user_run_as(self, user):
        if not self.switch_users:
            return None
        if user.uid == 0:
            return self._default_privs()
        return RunAs(user.name, user.uid, user.gid, user.home)

    def _owner_run_as(self, uid):
        if not self.switch_users:
            return None
        if uid is None or uid == 0:
            return self._default_privs()
        try:
            pw = pwd.getpwuid(uid)
        except KeyError:
            return RunAs(str(uid), uid, uid, "/")
        return RunAs(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir)

    def _default_privs(self):
        name = self.cfg.queue.default_privs
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            raise RouteError("4.3.5", f"default_privs user {name!r} does not exist") from None
        if pw.pw_uid == 0:
            raise RouteError("4.3.5", "default_privs must not be root")
        return RunAs(pw.pw_name, pw.pw_uid, pw.pw_gid, "/")


class _Unsafe(Exception):
    """A forward or include file that someone else could have written."""


def _read_safe(path, *, trusted_uids):
    """(owner uid, text) of a small regular file nobody else may write."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, encoding="utf-8", errors="replace") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _Unsafe("not a regular file")
        if st.st_mode & 0o022:
            raise _Unsafe("writable by group or others")
        if trusted_uids is not None and st.st_uid not in trusted_uids:
            raise _Unsafe("owned by someone else")
        return st.st_uid, f.read(1 << 20)


def _items_of(text):
    items = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            items.extend(split_items(line))
    return items
