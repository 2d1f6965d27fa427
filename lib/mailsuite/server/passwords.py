"""Password hashes for the passwd-file backend: scrypt from hashlib.

Stored as `$scrypt$ln=N,r=R,p=P$SALT$HASH` (base64, no padding), the same
shape as passlib's scrypt hashes, so an admin can generate them elsewhere.
Verification is constant-time.
"""

import base64
import hashlib
import hmac
import os
import re

_LN, _R, _P = 14, 8, 1
_FORMAT = re.compile(r"\$scrypt\$ln=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9+/.]+)\$([A-Za-z0-9+/.]+)")


def _b64(data):
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text):
    return base64.b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password, salt, ln, r, p):
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=1 << ln, r=r, p=p,
                          maxmem=256 * 1024 * 1024, dklen=32)


def hash_password(password):
    salt = os.urandom(16)
    digest = _scrypt(password, salt, _LN, _R, _P)
    return f"$scrypt$ln={_LN},r={_R},p={_P}${_b64(salt)}${_b64(digest)}"


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
