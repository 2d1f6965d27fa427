"""Mailbox.update_flags: flag changes by UID, each made to what the file holds under the lock."""

from mailsuite.lda.deliver import deliver, open_spool
from mailsuite.store.prepare import prepare_bytes


def put(sandbox, *subjects):
    for subject in subjects:
        prepared = prepare_bytes(b"Subject: " + subject + b"\n\nbody\n")
        deliver(sandbox.cfg, sandbox.user("alice"), prepared, sender="s@example.org")
        prepared.close()


def test_a_change_starts_from_the_file_not_from_an_old_look(sandbox):
    put(sandbox, b"a", b"b")
    seen = []
    with open_spool(sandbox.cfg, sandbox.user("alice")) as stale:
        with stale.locked():
            stale.sync()                                # this one looked first ...
        with open_spool(sandbox.cfg, sandbox.user("alice")) as other, other.locked():
            other.sync(flags={1: (frozenset("RA"), ("$other",))})   # ... then another one wrote
        with stale.locked():
            index = stale.update_flags({1: lambda flags, keywords: (seen.append((flags, keywords)) or
                                                                    (flags - {"R"}, keywords + ("$mine",))),
                                        7: lambda flags, keywords: (frozenset("D"), ())})
    assert seen == [(frozenset("RA"), ("$other",))]
    assert [(sorted(m.flags), m.keywords) for m in index.messages] == [(["A"], ("$other", "$mine")), ([], ())]
    assert "$mine" in index.keywords
