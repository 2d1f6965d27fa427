"""Addresses as the programs check them (core/address.py)."""

import re

import pytest

from mailsuite.core import address

# RFC 5322 atext and RFC 5321 let-dig, with RFC 6531's UTF-8, spelled out as the RFCs do
ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\x80-\U0010ffff-]")
LET_DIG = re.compile(r"[A-Za-z0-9\x80-\U0010ffff]")


def test_character_classes_are_the_rfc_sets():
    """The classes are written as negated ASCII sets (cheap to compile); they must be the same sets."""
    atom = re.compile(address._ATOM)
    letter_digit = re.compile(address._LETTER_DIGIT)
    letter_digit_hyphen = re.compile(address._LETTER_DIGIT_HYPHEN)
    for code in range(0x110000):
        c = chr(code)
        assert bool(atom.fullmatch(c)) == bool(ATEXT.fullmatch(c)), hex(code)
        assert bool(letter_digit.fullmatch(c)) == bool(LET_DIG.fullmatch(c)), hex(code)
        assert bool(letter_digit_hyphen.fullmatch(c)) == (bool(LET_DIG.fullmatch(c)) or c == "-"), hex(code)


@pytest.mark.parametrize("text", ["alice", "alice@example.test", "a.b+tag@mail.example.test", '"a b"@x.test',
                                  "jörg@bücher.example", "user@[192.0.2.1]", "x@a-b.test"])
def test_valid(text):
    assert address.valid(text)


@pytest.mark.parametrize("text", ["", "a..b@x.test", ".a@x.test", "a@-x.test", "a@x-.test", "a b@x.test",
                                  "a@x..test", "<a@x.test>", "a@x@y.test", "a@"])
def test_not_valid(text):
    assert not address.valid(text)
