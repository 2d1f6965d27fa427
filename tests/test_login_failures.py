"""Failed logins tell nothing and cannot go on for ever (issue 10, items 7, 8 and 15).

7: PAM ran before the uid check, so the right password of root or of an
   account below first_valid_uid failed faster than a wrong one: an oracle.
8: an unknown user failed faster than a known one with a wrong password
   (pam_unix adds its own delay): user names could be told apart.
15: IMAP allowed unlimited LOGIN attempts on one connection (POP3 too, since
   USER reset its error count).

Played through PAM by real users against the servers as a client sees
them.  Timings are only ever compared with each other, over several
attempts each, never with a clock figure.
"""

import imaplib
import poplib
import secrets
import time

import pytest
from procs import start_listener, stop_listener
from smtp_helpers import S421_CLOSING, S535_AUTH_FAILED, Instance

pytestmark = pytest.mark.root

DELAY = 0.4          # failure_delay: small, to keep the tests short
ROUNDS = 4


@pytest.fixture
def daemon():
    """daemon(installation, program) -> port of its -d listener, stopped when the test ends."""
    running = []

    def start(installation, name):
        proc, port = start_listener(installation.command(name, "-d"))
        running.append(proc)
        return port

    yield start
    for proc in running:
        stop_listener(proc)


def imap_failure(port, name, password):
    """(seconds from LOGIN to its refusal, the refusal's text) on a fresh connection."""
    imap = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    started = time.monotonic()
    with pytest.raises(imaplib.IMAP4.error) as refusal:
        imap.login(name, password)
    elapsed = time.monotonic() - started
    imap.shutdown()
    return elapsed, str(refusal.value)


def test_every_failed_login_takes_the_same_time(real_users, pam_service, installation_factory, daemon):
    refused = real_users.add("sysacct")              # made first: the lower uid
    user = real_users.add("secA")
    assert refused.uid < user.uid
    system = installation_factory([refused, user], pam_service,
                                  auth={"failure_delay": f"{DELAY}s", "first_valid_uid": user.uid})
    port = daemon(system, "imapd")
    cases = {
        "unknown user": (f"nouser{secrets.token_hex(3)}", "whatever"),
        "wrong password": (user.name, "wrong"),
        "refused uid, right password": (refused.name, refused.password),
        "refused uid, wrong password": (refused.name, "wrong"),
        "root": ("root", "wrong"),
    }
    times = {case: [] for case in cases}
    replies = set()
    for _ in range(ROUNDS):
        for case, (name, password) in cases.items():
            elapsed, reply = imap_failure(port, name, password)
            times[case].append(elapsed)
            replies.add(reply)
    # The fastest of each case: what the server lets a client measure, without the noise a loaded
    # machine adds to single attempts (a slow attempt is padded to the next whole failure_delay).
    fastest = {case: min(values) for case, values in times.items()}
    assert len(replies) == 1, replies
    assert max(fastest.values()) - min(fastest.values()) < DELAY / 2, times


def test_imap_ends_the_session_after_a_few_failures_each_slower(real_users, pam_service, installation_factory,
                                                                daemon):
    user = real_users.add("secA")
    system = installation_factory([user], pam_service, auth={"failure_delay": f"{DELAY}s"})
    port = daemon(system, "imapd")
    imap = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    durations = []
    for _ in range(3):
        started = time.monotonic()
        with pytest.raises((imaplib.IMAP4.error, imaplib.IMAP4.abort)):
            imap.login(user.name, "wrong")
        durations.append(time.monotonic() - started)
    with pytest.raises((imaplib.IMAP4.abort, OSError)):
        imap.login(user.name, user.password)
    assert durations[1] - durations[0] > DELAY / 2 and durations[2] - durations[1] > DELAY / 2, durations


def test_pop3_ends_the_session_after_a_few_failures(real_users, pam_service, installation_factory, daemon):
    user = real_users.add("secA")
    system = installation_factory([user], pam_service, auth={"failure_delay": "0"})
    port = daemon(system, "pop3d")
    pop = poplib.POP3("127.0.0.1", port, timeout=30)
    replies = []
    for _ in range(3):
        pop.user(user.name)
        with pytest.raises(poplib.error_proto) as refusal:
            pop.pass_("wrong")
        replies.append(str(refusal.value))
    assert "closing" in replies[-1] and all("[AUTH]" in r for r in replies)
    with pytest.raises((poplib.error_proto, OSError, EOFError)):
        pop.user(user.name)
        pop.pass_(user.password)


def test_smtp_ends_the_session_after_a_few_failures(tmp_path):
    host = Instance(tmp_path / "host", smtp={"max_errors": "20"}).start()
    try:
        client = host.connect()
        client.reply()
        client.command("EHLO client.example")
        codes = [client.command("AUTH PLAIN AGFsaWNlAHdyb25n")[0] for _ in range(3)]   # alice / wrong
        assert codes == [S535_AUTH_FAILED, S535_AUTH_FAILED, S421_CLOSING]
        assert client.closed()
        client.close()
    finally:
        host.stop()
