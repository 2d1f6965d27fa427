"""Who may log in to pop3d and imapd, and becoming that user afterwards.

Passwords are checked against the passwd-file (scrypt hashes, see
`passwords`) for virtual and sandbox users, and through PAM for system
users.  An account the servers never serve (root, uids below
`first_valid_uid`) is refused before any password check, so its password
is never tested.  Every failure looks the same to the client whatever its
cause (no such user, refused account, wrong password, locked account) and
ends a fixed time after the attempt began, PAM's own delay taken over
(`pam`), so neither the reply nor its timing tells the causes apart: the
server is neither a password oracle nor a user-name oracle.  One
Authenticator serves one session: the n-th failure in the session takes n
times `failure_delay`, and after `max_login_failures` the session ends
(`exhausted`), the same rule in POP3, IMAP and SMTP.  Each attempt is
logged with user, client address and result.

After a login the session process drops to the user (`drop_privileges`)
before it opens any mailbox: no supplementary groups at all, the user's gid
as real and effective gid with the mail group only as the saved gid (see
`mailgroup`: enabled just around dotlock creation in a 2775 root:mail spool
directory, never held while serving the client), then the uid, and a check
that root cannot be regained.
"""

import base64
import binascii
import functools
import grp
import importlib
import math
import os
import stat
import time

from ..core.log import fields
from ..core.users import UserDB


@functools.cache
def _dummy_hash(cost):
    """A hash of a random password: unknown users cost the same scrypt work as known ones."""
    from . import passwords
    return passwords.hash_password(os.urandom(16).hex(), cost)


class Authenticator:
    """Checks passwords for one session of a service ("pop3", "imap", "smtp") and logs every attempt."""

    def __init__(self, cfg, service, logger):
        self.cfg = cfg
        self.service = service
        self.logger = logger
        self.users = UserDB(cfg)
        self.failures = 0
        from . import passwords  # hashlib and OpenSSL: loaded by sessions that check passwords only
        self.passwords = passwords

    @property
    def exhausted(self):
        """The session has failed `max_login_failures` logins: end it."""
        return self.failures >= self.cfg.auth.max_login_failures

    def authenticate(self, username, password, peer):
        """The User when USERNAME/PASSWORD is right, else None (after the failure delay)."""
        started = time.monotonic()
        user = self.users.lookup(username)
        if user is not None and not self._uid_allowed(user):
            ok, method = False, "refused-uid"
        else:
            ok, method = self._check(user, username, password, peer)
        return self._result(user, username, peer, method, ok, started)

    def authenticate_apop(self, username, challenge, digest_hex, peer):
        """RFC 1939 APOP: DIGEST_HEX must be MD5(CHALLENGE + the user's shared secret)."""
        import hashlib
        import hmac
        started = time.monotonic()
        user = self.users.lookup(username)
        allowed = user is not None and self._uid_allowed(user)
        secret = self._apop_secret(user.name) if allowed else None
        expected = hashlib.md5(challenge.encode() + (secret or os.urandom(16).hex()).encode()).hexdigest()
        ok = secret is not None and hmac.compare_digest(expected, digest_hex.lower())
        return self._result(user, username, peer, "apop" if allowed or user is None else "refused-uid",
                            ok, started)

    def apop_enabled(self):
        return bool(self.cfg.auth.apop_secrets)

    # --- backends --------------------------------------------------------

    def _check(self, user, username, password, peer):
        if user is not None and user.password_hash:
            return self.passwords.verify_password(password, user.password_hash), "passwd-file"
        if user is not None and self.cfg.auth.pam and not self.cfg.mailsuite.sandbox:
            from . import pam  # ctypes and libpam only for system users
            ok, reason = pam.authenticate(self.cfg.auth.pam_service, user.name, password,
                                          rhost=peer[0] if peer else None)
            if not ok and reason:
                self.logger.debug("pam: user=%s: %s", user.name, reason)
            return ok, "pam"
        self.passwords.verify_password(password, _dummy_hash(self.cfg.auth.scrypt_cost))
        return False, "none"

    def _uid_allowed(self, user):
        """System accounts (uid below first_valid_uid, root above all) never log in remotely."""
        return self.cfg.mailsuite.sandbox or (user.uid != 0 and user.uid >= self.cfg.auth.first_valid_uid)

    def _apop_secret(self, name):
        """The user's APOP secret from the secrets file (name:secret lines, readable by root only)."""
        path = self.cfg.auth.apop_secrets
        if not path or name is None:
            return None
        try:
            with open(path, encoding="utf-8") as f:
                info = os.fstat(f.fileno())
                if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO) or info.st_uid not in (0, os.geteuid()):
                    self.logger.error("%s: refusing APOP secrets readable by others or owned by uid %d",
                                      path, info.st_uid)
                    return None
                for line in f:
                    entry, sep, secret = line.rstrip("\n").partition(":")
                    if sep and entry == name and not line.startswith("#"):
                        return secret
        except OSError as exc:
            self.logger.error("%s: %s", path, exc.strerror)
        return None

    def _result(self, user, username, peer, method, ok, started):
        shown = user.name if user else "".join(c if c.isprintable() else "?" for c in username[:64])
        self.logger.info("login: %s", fields(service=self.service, user=shown,
                                              rhost=peer[0] if peer else "local", method=method,
                                              result="ok" if ok else "failed"))
        if ok:
            return user
        self.failures += 1
        self._wait_out(started)
        return None

    def _wait_out(self, started):
        """End the failed attempt `failures` x failure_delay after it STARTED, whatever it cost.

        A check that ran longer than that (a slow PAM module) ends at the next
        whole failure_delay instead, so its length still tells nothing.
        """
        step = self.cfg.auth.failure_delay
        if step <= 0:
            return
        goal = started + step * self.failures
        now = time.monotonic()
        if now > goal:
            goal += step * math.ceil((now - goal) / step)
        time.sleep(max(goal - now, 0))


def plaintext_allowed(cfg, conn):
    """Passwords in the clear only inside TLS or from this host, unless the admin allows it."""
    return conn.is_tls or conn.is_loopback() or cfg.auth.allow_plaintext


def decode_sasl_plain(b64):
    """RFC 4616 PLAIN: base64 of authzid NUL authcid NUL password -> (authzid, authcid, password)."""
    try:
        raw = base64.b64decode(b64.strip(), validate=True)
        parts = raw.decode("utf-8").split("\0")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("not valid base64 UTF-8") from None
    if len(parts) != 3 or not parts[1]:
        raise ValueError("expected authzid NUL authcid NUL password")
    return parts[0], parts[1], parts[2]


def drop_privileges(user, cfg, preload=()):
    """Become USER for good: groups, gid, uid; no-op in the sandbox or when not root.

    PRELOAD names the modules the session imports only when it needs them
    (a protocol's less common commands): they are loaded now, while we are
    still root, since the user may not be able to read the interpreter's
    library (a Python installed under /root or /opt) or the package itself
    (a checkout in a 0700 directory) once the session runs as them.
    """
    if cfg.mailsuite.sandbox or os.geteuid() != 0:
        return
    for module in preload:
        importlib.import_module(module)
    if user.uid == 0:
        raise PermissionError("refusing to run a mail session as root")
    try:
        reserved = grp.getgrnam(cfg.mailsuite.mail_group).gr_gid
    except KeyError:
        reserved = user.gid
    os.setgroups([])
    os.setresgid(user.gid, user.gid, reserved)
    os.setresuid(user.uid, user.uid, user.uid)
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        os._exit(os.EX_SOFTWARE)     # root came back: never serve a session like that
    if (os.getresuid() != (user.uid,) * 3 or os.getresgid() != (user.gid, user.gid, reserved)
            or os.getgroups()):
        os._exit(os.EX_SOFTWARE)
