"""Webmail sessions without a server: the split password, expiry, forged cookies, the failure counter."""

import time

import pytest

from mailsuite.webmail import sessions


@pytest.fixture
def store(tmp_path):
    return sessions.Store(str(tmp_path / "state" / "webmail.sqlite"), idle=1800, lifetime=43200,
                          max_failures=3, failure_window=900)


def test_either_half_alone_says_nothing_of_the_password():
    stored, pad = sessions.seal("correct horse")
    assert sessions.unseal(stored, pad) == "correct horse"
    assert len(stored) == len(pad) == sessions.PAD_BLOCK                 # only a length bucket shows
    assert b"correct horse" not in stored and b"correct horse" not in pad
    other_stored, other_pad = sessions.seal("correct horse")
    assert other_stored != stored and other_pad != pad                   # a fresh pad every time
    assert sessions.unseal(stored, other_pad) != "correct horse"
    assert sessions.unseal(stored, pad[:-1]) is None
    with pytest.raises(ValueError):
        sessions.seal("x" * (sessions.MAX_PASSWORD + 1))
    assert sessions.unseal(*sessions.seal("pässwörd")) == "pässwörd"


def test_a_session_loads_from_its_cookie_only(store):
    cookie, session = store.create("alice", "secret")
    loaded = store.load(cookie)
    assert loaded.user == "alice" and loaded.password == "secret" and loaded.csrf == session.csrf
    sid, pad = cookie.split(".")
    assert store.load(sid) is None                                       # no pad
    assert store.load(sid + ".AAAA") is None                             # a pad of another length
    other = "y" if sid[0] == "x" else "x"
    assert store.load(other + sid[1:] + "." + pad) is None               # another id
    assert store.load("") is None and store.load("...") is None
    store.delete(loaded)
    assert store.load(cookie) is None                                    # logout ends it everywhere


def test_sessions_expire_when_idle_and_at_their_lifetime(store):
    cookie, session = store.create("alice", "secret")
    with store._connect() as db:
        db.execute("UPDATE sessions SET seen = ? WHERE id_hash = ?", (time.time() - 1801, session.key))
    assert store.load(cookie) is None
    cookie, session = store.create("alice", "secret")
    with store._connect() as db:
        db.execute("UPDATE sessions SET created = ? WHERE id_hash = ?", (time.time() - 43201, session.key))
    assert store.load(cookie) is None
    with store._connect() as db:
        assert db.execute("SELECT count(*) FROM sessions").fetchone()[0] == 0     # expired rows are gone


def test_failures_lock_out_the_user_and_the_address_until_the_window_passes(store):
    for _ in range(3):
        assert not store.locked_out("bob", "192.0.2.1")
        store.record_failure("bob", "192.0.2.1")
    assert store.locked_out("bob", "192.0.2.9")            # the user, from anywhere
    assert store.locked_out("carol", "192.0.2.1")          # anyone, from that address
    assert not store.locked_out("carol", "192.0.2.9")
    with store._connect() as db:
        db.execute("UPDATE failures SET first = first - 901")
    assert not store.locked_out("bob", "192.0.2.1")


def test_the_database_is_private(tmp_path, store):
    assert (tmp_path / "state" / "webmail.sqlite").stat().st_mode & 0o777 == 0o600
