"""The real programs the tests talk to, and what happens when one is missing.

Every test that needs software from outside the project (a peer such as
Dovecot or swaks, a tool such as openssl, a capability such as mounting a
tmpfs) asks for it here, naming the Debian package that provides it.  On a
developer's machine a missing peer skips the test with that name; with
MAILSUITE_REQUIRE_PEERS=1 (set by .ci/run) it fails the test, so CI can
never pass by skipping what it forgot to install.

A peer that is installed without a part a test needs (swaks without its
TLS modules) is reported the same way by the peer's own feature check,
never by an assertion deep in the test.
"""

import functools
import os
import shutil
import subprocess

import pytest

REQUIRED = os.environ.get("MAILSUITE_REQUIRE_PEERS") == "1"

SBIN = "/usr/sbin:/sbin:/usr/lib/dovecot"

# name -> (Debian package, how to find it: a command on PATH or an absolute path)
PEERS = {
    "swaks": ("swaks", "swaks"),
    "procmail": ("procmail", "procmail"),
    "dotlockfile": ("liblockfile-bin", "dotlockfile"),
    "dovecot-lda": ("dovecot-core", "/usr/lib/dovecot/dovecot-lda"),
    "dovecot-imap": ("dovecot-imapd", "/usr/lib/dovecot/imap"),
    "dovecot-pop3": ("dovecot-pop3d", "/usr/lib/dovecot/pop3"),
    "mutt": ("mutt", "mutt"),
    "fetchmail": ("fetchmail", "fetchmail"),
    "mbsync": ("isync", "mbsync"),
    "s-nail": ("s-nail", "s-nail"),
    "inetd": ("openbsd-inetd", "inetd"),
    "dnsmasq": ("dnsmasq-base", "dnsmasq"),
    "postfix": ("postfix", "postfix"),
    "tmux": ("tmux", "tmux"),
    "ip": ("iproute2", "ip"),
    "openssl": ("openssl", "openssl"),
    "setpriv": ("util-linux", "setpriv"),
    "useradd": ("passwd", "useradd"),
    "gnu-time": ("time", "/usr/bin/time"),
    "system-python": ("python3", "/usr/bin/python3"),
    "strace": ("strace", "strace"),
    "chromium": ("chromium", "/usr/bin/chromium"),
    "chromedriver": ("chromium-driver", "/usr/bin/chromedriver"),
    "lighttpd": ("lighttpd", "lighttpd"),
    "dovecot-lmtp": ("dovecot-lmtpd", "/usr/lib/dovecot/lmtp"),
}


def missing(what, package):
    """Skip (or, in CI, fail) a test whose peer is absent, naming the package that provides it."""
    message = f"{what}: install the Debian package {package}"
    if REQUIRED:
        pytest.fail(f"MAILSUITE_REQUIRE_PEERS=1 and {message}", pytrace=False)
    pytest.skip(message)


def unavailable(capability, why):
    """Skip (or, in CI, fail) a test that needs something of the machine rather than a package."""
    if REQUIRED:
        pytest.fail(f"MAILSUITE_REQUIRE_PEERS=1 and {capability} is not available: {why}", pytrace=False)
    pytest.skip(f"{capability} is not available: {why}")


@functools.cache
def locate(name):
    """Where the peer NAME is installed, or None."""
    _, where = PEERS[name]
    if os.path.isabs(where):
        return where if os.access(where, os.X_OK) else None
    return shutil.which(where) or shutil.which(where, path=SBIN)


def require(name):
    """The path of peer NAME; skips (or fails, in CI) when it is not installed."""
    found = locate(name)
    if found is None:
        missing(f"{name} is not installed", PEERS[name][0])
    return found


def needs(*names):
    """A marker for a test (or, as pytestmark, a module) that needs these peers; checked at set-up."""
    return pytest.mark.peers(*names)


def require_root(why):
    """Root-only tests run in CI (which runs as root); elsewhere they skip, saying why they need it."""
    if os.geteuid() != 0:
        if REQUIRED:
            pytest.fail(f"MAILSUITE_REQUIRE_PEERS=1 and this test needs root: {why}", pytrace=False)
        pytest.skip(f"needs root: {why}")


# --- features of installed peers ---------------------------------------------

@functools.cache
def swaks_features():
    """What this swaks can do: the names `swaks --support` reports as supported."""
    done = subprocess.run([require("swaks"), "--support"], capture_output=True, text=True, timeout=30)
    return {line[4:-len(" supported")] for line in (done.stdout + done.stderr).splitlines()
            if line.startswith("=== ") and line.endswith(" supported")}


SWAKS_FEATURE_PACKAGES = {"TLS": "libnet-ssleay-perl and libio-socket-ssl-perl",
                          "Basic AUTH": "libmime-base64-perl"}


def require_swaks(*features):
    """swaks with every feature named ("TLS", "Basic AUTH"); its path."""
    path = require("swaks")
    for feature in features:
        if feature not in swaks_features():
            missing(f"swaks is installed without {feature} support", SWAKS_FEATURE_PACKAGES[feature])
    return path
