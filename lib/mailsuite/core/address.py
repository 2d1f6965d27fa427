"""Envelope addresses as the MTA handles them: checked, qualified, classified.

An address from a command line or a header becomes `local@domain` with no
angle brackets and no comments; the null sender is "".  Anything holding a
control character, or starting with '-' (it would read as an option to a
program further down), is refused here, once, for every caller.
"""

import re

_SIMPLE = re.compile(r"[^\s<>(),;:\"\[\]\\]+")


class AddressError(ValueError):
    """An address that must not be used; the message says why."""


def check(address, *, what="address"):
    """Refuse addresses that could smuggle options or lines into another program."""
    if any(c in address for c in "\r\n\0"):
        raise AddressError(f"{what} contains a control character: {address!r}")
    if address.startswith("-"):
        raise AddressError(f"{what} starts with '-': {address!r}")
    if any(ord(c) < 32 or ord(c) == 127 for c in address):
        raise AddressError(f"{what} contains a control character: {address!r}")
    if len(address) > 512:
        raise AddressError(f"{what} is too long")
    return address


# Written as negated ASCII classes: the same sets as "letters, digits, ... and \x80-\U0010ffff",
# which the re module takes 17 ms to compile, at every start of every program.
_ATOM = r'[^\x00-\x20\x7f"(),.:;<>@\[\\\]]+'              # atext (RFC 5322), and UTF-8 (RFC 6531)
_LETTER_DIGIT = r"[^\x00-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]"
_LETTER_DIGIT_HYPHEN = r"[^\x00-\x2c\x2e\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]"
_LABEL = rf"{_LETTER_DIGIT}(?:{_LETTER_DIGIT_HYPHEN}*{_LETTER_DIGIT})?"
_ADDR_SPEC = re.compile(rf'(?:{_ATOM}(?:\.{_ATOM})*|"(?:[^"\\\r\n]|\\.)*")'
                        rf"(?:@(?:{_LABEL}(?:\.{_LABEL})*|\[[^\[\]\\\s]+\]))?")


def valid(address):
    """Whether ADDRESS is an addr-spec (RFC 5321/6531: local@domain, or a bare local name to qualify)."""
    return _ADDR_SPEC.fullmatch(address) is not None


def strip_brackets(address):
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1].strip()
    return address


def parse_list(text):
    """Addresses in TEXT ("a, Bob <b@x>, c"), without names; groups flattened."""
    check(text)
    if _SIMPLE.fullmatch(text.strip()):
        return [text.strip()]
    import email.utils
    found = []
    for _name, addr in email.utils.getaddresses([text]):
        addr = addr.strip()
        if addr:
            found.append(check(addr))
    return found


def qualify(address, domain):
    """Append @DOMAIN to a bare local part; leave the null sender and full addresses alone."""
    if not address or "@" in address:
        return address
    return f"{address}@{domain}"


def split(address):
    """(local part, lower-cased domain); the domain is "" for a bare name."""
    local, at, domain = address.rpartition("@")
    if not at:
        return address, ""
    return local, domain.lower()


def is_local(cfg, address):
    """True when ADDRESS is delivered on this host (no domain, or a local domain)."""
    _local, domain = split(address)
    return not domain or domain in cfg.local_domains


def origin_domain(cfg):
    """The domain given to unqualified addresses."""
    return cfg.submission.origin or cfg.hostname


def user_part(address):
    """The local user an address delivers to: `bob`, `bob@host` and `bob+tag@host` all mean bob."""
    local = address.rsplit("@", 1)[0] if "@" in address else address
    return local.split("+", 1)[0]
