"""Where a recipient's mail goes: aliases, then ~/.forward, then the mailbox.

`Router.resolve()` turns one envelope recipient into the final delivery
targets: a user's mailbox, a file, a command, or a remote address.  Problems
inside an expansion (an unknown member, a loop, a forbidden command) become
`error` targets, so the other members of a list still get their copy and
the sender's bounce names the one that failed.

Security, as sendmail and Postfix's local(8) have it.  Commands and files
come only from the aliases file, users' .forward files and the :include:
files these name, never from an address.  Every expansion carries an
`Authority`, the user whose rights it runs with:

- a user's .forward is opened by a child process that became that user
  (asuser.py), and must be owned by the user or root and writable by
  nobody else; its authority is the user;
- a :include: file named in a .forward is opened with that same user's
  rights, must be owned by the user or root, and everything it yields
  (|command, /file, addresses, further :include:) runs as the .forward's
  owner, never as the include file's owner;
- only root's aliases (and root's own .forward) may include files of other
  owners; what such a file yields runs as its owner;
- root never runs a command or writes a file: its authority acts as
  `default_privs`.

An include file is quoted in bounces and logs only as short, clean
excerpts of the lines that failed, and only a few of them per file.
"""

import errno
import os
import pwd
import stat
from dataclasses import dataclass

from ..core import address as addr
from ..core.log import excerpt
from ..core.users import UserDB
from .aliases import Aliases, split_items

MAX_DEPTH = 20
MAX_FILE_SIZE = 1 << 20
MAX_QUOTED_ERRORS = 3          # per include file; the rest are counted, not quoted
PERMANENT_OPEN_ERRORS = {errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.ELOOP,
                         errno.ENAMETOOLONG, errno.EISDIR, errno.ENXIO}
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


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
class Authority:
    """Whose rights an expansion has: they open its :include: files, which must be
    theirs or root's unless `any_owner` (root's aliases), and run what it yields."""

    identity: RunAs
    any_owner: bool = False


ROOT = Authority(RunAs("root", 0, 0, "/"), any_owner=True)     # root's aliases, the configuration


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
    def __init__(self, cfg, *, users=None, aliases=None, logger=None):
        self.cfg = cfg
        self.users = users or UserDB(cfg)
        self.aliases = aliases if aliases is not None else Aliases(cfg.queue.aliases)
        self.logger = logger
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
            return self._error(out, name, "5.4.6", f"mail forwarding loop for {excerpt(name)}", via)
        if len(chain) >= MAX_DEPTH:
            return self._error(out, name, "5.4.6", f"alias expansion of {excerpt(name)} too deep", via)
        chain = chain + (lname,)
        items = self.aliases.lookup(lname)
        if items is not None:
            authority = self._aliases_authority()
            for item in items:
                self._item(item, chain, out, authority=authority, self_name=lname, via=f"alias {lname}")
            return None
        user = self.users.lookup(name)
        if user is None:
            if self.cfg.queue.catch_all:
                return self._item(self.cfg.queue.catch_all, chain, out, authority=ROOT, self_name=lname,
                                  via="catch_all")
            return self._error(out, name, "5.1.1", f"{excerpt(name)}: user unknown", via)
        authority = Authority(RunAs(user.name, user.uid, user.gid, user.home), any_owner=user.uid == 0)
        forward = self._forward(user, authority)
        if not forward:
            out.setdefault(f"mailbox:{user.name}", Target("mailbox", user.name, user=user, via=via))
            return None
        for item in forward:
            self._item(item, chain, out, authority=authority, self_name=user.name.lower(),
                       via=f"{user.name}'s forward file")
        return None

    def _item(self, item, chain, out, *, authority, self_name, via):
        if item.startswith("|"):
            if not self.cfg.queue.allow_commands:
                return self._error(out, item, "5.7.1", "command deliveries are disabled", via)
            target = Target("command", item[1:].strip(), run_as=self._run_as(authority), via=via)
            out.setdefault(target.key, target)
        elif item.startswith("/"):
            if not self.cfg.queue.allow_files:
                return self._error(out, item, "5.7.1", "file deliveries are disabled", via)
            target = Target("file", os.path.normpath(item), run_as=self._run_as(authority), via=via)
            out.setdefault(target.key, target)
        elif item.lower().startswith(":include:"):
            self._include(item[len(":include:"):].strip(), chain, out, authority=authority,
                          self_name=self_name, via=via)
        elif item.startswith("\\"):
            self._mailbox(item[1:], out, via)
        else:
            try:
                address = addr.check(addr.strip_brackets(item), what="alias member")
            except addr.AddressError:
                return self._error(out, item, "5.1.3", f"{excerpt(item)}: not a usable address", via)
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
            return self._error(out, name, "5.1.1", f"{excerpt(name)}: user unknown", via)
        out.setdefault(f"mailbox:{user.name}", Target("mailbox", user.name, user=user, via=via))
        return None

    def _include(self, path, chain, out, *, authority, self_name, via):
        shown = f":include:{excerpt(path)}"
        if not path.startswith("/") or "\0" in path or len(path) > 4096:
            return self._error(out, path, "5.3.5", f"{shown}: not an absolute path", via)
        link = f":include:{path}"
        if link in chain or len(chain) >= MAX_DEPTH:
            return self._error(out, path, "5.4.6", f"{shown}: includes itself", via)
        try:
            owner_uid, text = self._read(authority, path)
        except OSError as exc:
            self._warn("%s: cannot open %s as %s: %s", via, link, authority.identity.name, exc.strerror)
            if exc.errno in PERMANENT_OPEN_ERRORS:
                return self._error(out, path, "5.3.5", f"{shown}: {exc.strerror}", via)
            raise RouteError("4.3.0", f"{shown}: {exc.strerror}") from None
        except _Unsafe as exc:
            self._warn("%s: %s ignored: %s", via, link, exc)
            return self._error(out, path, "5.3.5", f"{shown}: {exc}", via)
        if not authority.any_owner and owner_uid not in (authority.identity.uid, 0):
            self._warn("%s: %s ignored: owned by uid %d, not by %s or root", via, link, owner_uid,
                       authority.identity.name)
            return self._error(out, path, "5.3.5", f"{shown}: owned by someone else", via)
        if authority.any_owner and owner_uid != 0:
            authority = Authority(self._identity_of_uid(owner_uid))
        before = set(out)
        for item in _items_of(text):
            self._item(item, chain + (link,), out, authority=authority, self_name=self_name, via=shown)
        self._bound_errors(out, before, shown, via)
        return None

    def _bound_errors(self, out, before, shown, via):
        """Keep at most MAX_QUOTED_ERRORS error targets quoting one include file's lines."""
        new_errors = [key for key in out if key not in before and out[key].kind == "error"]
        for key in new_errors[MAX_QUOTED_ERRORS:]:
            del out[key]
        hidden = len(new_errors) - MAX_QUOTED_ERRORS
        if hidden > 0:
            self._error(out, f"more:{shown}", "5.1.1", f"{shown}: {hidden} more unusable entries", via)

    def _forward(self, user, authority):
        """The items of USER's forward file, or None when there is none usable."""
        template = self.cfg.queue.forward_file
        if not template or not user.home:
            return None
        path = self.cfg.expand_user_path(template, user.home)
        if not os.path.lexists(path):
            return None             # most users have none: no child process to find that out
        try:
            owner_uid, text = self._read(authority, path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._warn("%s: cannot open as %s: %s; delivering to the mailbox", path, user.name, exc.strerror)
            return None
        except _Unsafe as exc:
            self._warn("%s: ignored: %s", path, exc)
            return None
        if owner_uid not in (user.uid, 0):
            self._warn("%s: ignored: owned by uid %d, not by %s or root", path, owner_uid, user.name)
            return None
        return _items_of(text) or None

    def _read(self, authority, path):
        """(owner uid, text) of a small regular file nobody else may write, opened with
        AUTHORITY's rights: by a child that became the user when we are root."""
        identity = authority.identity
        if self.switch_users and identity.uid not in (0, os.geteuid()):
            from ..core.asuser import open_as
            fd = open_as(identity, path, OPEN_FLAGS)
        else:
            fd = os.open(path, OPEN_FLAGS)
        with open(fd, "rb") as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise _Unsafe("not a regular file")
            if st.st_mode & 0o022:
                raise _Unsafe("writable by group or others")
            return st.st_uid, f.read(MAX_FILE_SIZE).decode("utf-8", "replace")

    def _error(self, out, what, dsn, reason, via):
        out.setdefault(f"error:{what}", Target("error", reason, via=via, dsn=dsn))

    def _warn(self, text, *args):
        if self.logger is not None:
            self.logger.warning(text, *args)

    # --- identities ----------------------------------------------------

    def _aliases_authority(self):
        """Root's aliases may include anyone's files; another owner's aliases only theirs."""
        owner = self.aliases.owner
        if owner is None or owner == 0:
            return ROOT
        return Authority(self._identity_of_uid(owner))

    def _identity_of_uid(self, uid):
        try:
            pw = pwd.getpwuid(uid)
        except KeyError:
            return RunAs(str(uid), uid, uid, "/")
        return RunAs(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir)

    def _run_as(self, authority):
        """Who runs the commands and writes the files of AUTHORITY: never root."""
        if not self.switch_users:
            return None
        if authority.identity.uid == 0:
            return self._default_privs()
        return authority.identity

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


def _items_of(text):
    items = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            items.extend(split_items(line))
    return items
