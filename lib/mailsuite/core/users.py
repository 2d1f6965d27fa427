"""Who the mail users are: system accounts (pwd) and the passwd-file.

A `User` carries what delivery and the servers need: uid/gid to run as,
home (for ~/.forward, ~/mail, the index cache) and the spool path.  In
sandbox mode every virtual user maps to the invoking uid, so nothing needs
root; in system mode passwd-file users must name a real uid.
"""

import os
import pwd
from collections import namedtuple

from .config import ConfigError


class User(namedtuple("User", "name uid gid home gecos spool password_hash", defaults=(None,))):
    """A mail user; password_hash is set for passwd-file users only (system users use PAM)."""

    __slots__ = ()

    @property
    def full_name(self):
        """The GECOS full name (first comma-separated field)."""
        return self.gecos.split(",", 1)[0].strip()


def valid_name(name):
    """A mailbox user name: no path tricks, no control characters."""
    return (bool(name) and len(name) <= 64 and name not in (".", "..")
            and not name.startswith("-")
            and all(c.isprintable() and c not in "/:@ \t" for c in name))


class UserDB:
    """Looks users up in the passwd-file first, then (outside the sandbox) pwd."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.spool_dir = cfg.mailsuite.spool_dir
        self.sandbox = cfg.mailsuite.sandbox
        self.virtual = _read_passwd_file(cfg.mailsuite.passwd_file, self.sandbox) if cfg.mailsuite.passwd_file else {}

    def lookup(self, name):
        """The User called NAME (case-insensitive for virtual users), or None."""
        if not valid_name(name):
            return None
        entry = self.virtual.get(name) or self.virtual.get(name.lower())
        if entry:
            return self._user(*entry)
        if self.sandbox:
            return None
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            return None
        return self._user(pw.pw_name, None, pw.pw_uid, pw.pw_gid, pw.pw_gecos, pw.pw_dir)

    def by_uid(self, uid):
        """The user a uid belongs to (sandbox: the virtual user matching $USER, else None)."""
        if self.sandbox:
            return None
        try:
            pw = pwd.getpwuid(uid)
        except KeyError:
            return None
        return self.lookup(pw.pw_name)

    def names(self):
        return sorted(self.virtual)

    def _user(self, name, password_hash, uid, gid, gecos, home):
        return User(name=name, uid=uid, gid=gid, home=home, gecos=gecos,
                    spool=os.path.join(self.spool_dir, name), password_hash=password_hash)


def _read_passwd_file(path, sandbox):
    """name:hash:uid:gid:gecos:home lines; '#' comments; uid/gid may be empty in the sandbox."""
    users = {}
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                line = line.rstrip("\n")
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                fields = line.split(":")
                if len(fields) != 6 or not valid_name(fields[0]):
                    raise ConfigError(f"{path}:{number}: expected name:hash:uid:gid:gecos:home")
                name, password_hash, uid, gid, gecos, home = fields
                if sandbox:
                    uid, gid = os.getuid(), os.getgid()
                else:
                    try:
                        uid, gid = int(uid), int(gid)
                    except ValueError:
                        raise ConfigError(f"{path}:{number}: uid and gid must be numbers") from None
                users[name] = (name, password_hash or None, uid, gid, gecos, home)
    except FileNotFoundError:
        raise ConfigError(f"{path}: passwd_file does not exist") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    return users


def login_name():
    """The name of the user running this process (the uid's entry, else $USER): a local sender."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return os.environ.get("USER", f"uid{os.getuid()}")
