"""The mail group held in reserve by a session that runs as its user.

On Debian's 2775 root:mail spool directory only group mail may create
`USER.lock`.  A session holding that group for its whole life could also
rename, create and remove every file in the directory, other users' spools
included.  So a pop3d or imapd session that dropped to its user keeps the
mail gid only as its *saved* gid (`auth.drop_privileges`), never as its
effective or a supplementary group, and `enabled()` makes it effective for
the few system calls that create or remove a dotlock in the spool
directory, then puts the user's gid back — Dovecot's
`mail_privileged_group`.  A process whose saved gid is its effective gid
(root, the sandbox, mail(1) run by a user) has nothing in reserve and
`enabled()` changes nothing.

Safe because the process runs our code only (the user cannot ptrace it: the
kernel refuses while the saved gid differs from theirs), the window covers
names we build from the spool directory and the mailbox name, and nothing
the client sends is read while the group is in force.
"""

import os
from contextlib import contextmanager


@contextmanager
def enabled():
    """Run the body with the reserved gid as effective gid, if this process has one."""
    _, effective, saved = os.getresgid()
    if saved == effective:
        yield
        return
    os.setresgid(-1, saved, -1)
    try:
        yield
    finally:
        os.setresgid(-1, effective, -1)
