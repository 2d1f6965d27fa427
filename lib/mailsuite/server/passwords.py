"""Password hashes for the passwd-file backend: scrypt from hashlib.

Stored as `$scrypt$ln=N,r=R,p=P$SALT$HASH` (base64, no padding), the same
shape as passlib's scrypt hashes, so an admin can generate them elsewhere.
Verification is constant-time and costs what the stored hash says: the
cost of new hashes is `[auth] scrypt_cost` (log2 of N), and nothing about a
check is cached, so a stolen passwd-file costs an attacker just as much.
"""

import base64
import hashlib
import hmac
import math
import os
import re

DEFAULT_COST = 14
_R, _P = 8, 1
_FORMAT = re.compile(r"\$scrypt\$ln=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9+/.]+)\$([A-Za-z0-9+/.]+)")


def _b64(data):
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text):
    return base64.b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password, salt, ln, r, p):
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=1 << ln, r=r, p=p,
                          maxmem=256 * 1024 * 1024, dklen=32)


def hash_password(password, cost=DEFAULT_COST):
    """A new hash of PASSWORD; COST is log2 of scrypt's N (at r=8: 128 * 8 * 2**COST bytes of memory)."""
    if not 10 <= cost <= 20:
        raise ValueError(f"scrypt cost {cost} is out of range (10-20)")
    salt = os.urandom(16)
    digest = _scrypt(password, salt, cost, _R, _P)
    return f"$scrypt$ln={cost},r={_R},p={_P}${_b64(salt)}${_b64(digest)}"


def work_of(stored):
    """The work a check of STORED costs, as log2 of N*r*p in units of r=8 (the cost of an r=8, p=1 hash); None
    if it is not a hash of ours."""
    m = _FORMAT.fullmatch(stored or "")
    if not m:
        return None
    ln, r, p = (int(g) for g in m.groups()[:3])
    return ln + math.log2(r * p / _R)


def verify_password(password, stored):
    """True when password matches; malformed or unknown hashes never match."""
    m = _FORMAT.fullmatch(stored or "")
    if not m:
        return False
    ln, r, p = (int(g) for g in m.groups()[:3])
    if not (1 <= ln <= 20 and 1 <= r <= 32 and 1 <= p <= 16):
        return False
    digest = _scrypt(password, _unb64(m.group(4)), ln, r, p)
    return hmac.compare_digest(digest, _unb64(m.group(5)))
