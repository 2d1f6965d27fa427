"""HOST:PORT as the configuration writes it: one reading for every setting (core/hostport.py)."""

import pytest

from mailsuite.core import hostport
from mailsuite.core.config import ConfigError


@pytest.mark.parametrize("text, default, expected", [
    ("0.0.0.0:25", None, ("0.0.0.0", 25)),
    ("[::1]:587", None, ("::1", 587)),
    ("[mx.example]", 25, ("mx.example", 25)),
    ("localhost", 25, ("localhost", 25)),
    ("::1", 25, ("::1", 25)),                     # a bare IPv6 address has no port
    (" relay.example:2525 ", None, ("relay.example", 2525)),
    ("127.0.0.1:0", None, ("127.0.0.1", 0)),      # any free port
])
def test_accepted(text, default, expected):
    assert hostport.parse(text, default) == expected


@pytest.mark.parametrize("text", ["nonsense", "h:x", "h:65536", "a b:25", "[::1]x", "[::1", "h:-1", ""])
def test_refused_with_the_key_named(text):
    with pytest.raises(ConfigError) as raised:
        hostport.parse(text, key="[pop3] listen")
    assert str(raised.value).startswith("[pop3] listen: ") and repr(text) in str(raised.value)
    assert raised.value.status == 78


def test_listen_and_connect_addresses():
    assert hostport.listen_address(":110") == ("0.0.0.0", 110)
    assert hostport.listen_address("*:110") == ("0.0.0.0", 110)
    assert hostport.connect_address(":110") == ("127.0.0.1", 110)
    assert hostport.connect_address("[::]:143") == ("::1", 143)
    assert hostport.connect_address("192.0.2.1:25") == ("192.0.2.1", 25)
