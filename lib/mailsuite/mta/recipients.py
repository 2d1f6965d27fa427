"""Which local recipients exist: what the SMTP session asks before it says 250 to RCPT.

Accepting mail for any local part and bouncing it later sends the bounce
to whatever MAIL FROM claimed, which spammers forge (backscatter).  So,
as Postfix's local_recipient_maps does, RCPT for a local domain is
accepted only for a user, an alias, `postmaster` (RFC 5321 4.5.1), or any
name at all when `[queue] catch_all` takes mail for unknown users.  The
answer is the router's (routing.py): a name is known here exactly when the
router would not bounce it as unknown.
"""

from ..core import address as addr
from ..core.config import ConfigError
from ..core.users import UserDB
from .aliases import AliasError, Aliases


class LocalRecipients:
    """Built once per session; the aliases and users are read at the first question."""

    def __init__(self, cfg):
        self.cfg = cfg
        self._users = self._aliases = None

    def known(self, address):
        """False only when ADDRESS (in a local domain) is certainly nobody here."""
        local, _domain = addr.split(address)
        if self.cfg.queue.catch_all or local.lower() == "postmaster":
            return True
        try:
            if self._users is None:
                self._users, self._aliases = UserDB(self.cfg), Aliases(self.cfg.queue.aliases)
        except (OSError, ConfigError, AliasError, ValueError):
            return True             # cannot tell (a passwd-file we may not read): accept, route later
        return self._aliases.lookup(local) is not None or self._users.lookup(local) is not None
