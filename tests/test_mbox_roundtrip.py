"""Whatever mail.local appends reads back intact through Python's mailbox module.

mailbox.mbox is an mboxo reader and, like every reader of ours, does not
undo the mboxrd quoting delivery gives body lines matching ^>*From , so
the comparison quotes the original; everything else (headers, 8-bit bytes,
long lines, missing final newlines, CRLF input made LF) must be
byte-identical.
"""

import mailbox

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailsuite.lda.deliver import deliver, open_spool
from mailsuite.store.mailbox import quote_from_lines
from mailsuite.store.prepare import prepare_bytes

header_names = st.sampled_from(["Subject", "From", "To", "X-Test", "Comments", "Received"])
header_values = st.binary(min_size=0, max_size=80).map(
    lambda b: b.replace(b"\r", b"").replace(b"\n", b"").strip() or b"v")
body_lines = st.one_of(
    st.binary(max_size=120).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")),
    st.sampled_from([b"From me", b">From me", b">>From you", b"From", b"From  x", b"", b".", b"\x00nul",
                     b"\xff\xfe 8-bit", b"x" * 5000]))


@st.composite
def messages(draw):
    headers = draw(st.lists(st.tuples(header_names, header_values), min_size=1, max_size=6))
    lines = draw(st.lists(body_lines, max_size=20))
    crlf = draw(st.booleans())
    final_newline = draw(st.booleans())
    eol = b"\r\n" if crlf else b"\n"
    head = b"".join(name.encode() + b": " + value + eol for name, value in headers)
    body = eol.join(lines) + (eol if final_newline and lines else b"")
    return headers, lines, final_newline, head + eol + body


def expected_body(lines, final_newline):
    """The body with LF line ends; a last line without a newline gets one."""
    body = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    return body if body == b"" or body.endswith(b"\n") else body + b"\n"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(messages(), min_size=1, max_size=4))
def test_round_trip_through_python_mailbox(sandbox, batch):
    sandbox.clear_spools()
    alice = sandbox.user("alice")
    for _, _, _, raw in batch:
        prepared = prepare_bytes(raw)
        try:
            deliver(sandbox.cfg, alice, prepared, sender="sender@example.org")
        finally:
            prepared.close()
    box = mailbox.mbox(str(sandbox.spool("alice")), create=False)
    try:
        got = [box.get_bytes(key) for key in box.keys()]
    finally:
        box.close()
    assert len(got) == len(batch)
    for (headers, lines, final_newline, _), stored in zip(batch, got):
        head, _, body = stored.partition(b"\n\n")
        head_lines = head.split(b"\n")
        assert head_lines[0] == b"Return-Path: <sender@example.org>"
        assert head_lines[1] == b"Delivered-To: alice@localhost"
        original = [name.encode() + b": " + value for name, value in headers]
        assert head_lines[2:2 + len(original)] == original
        assert all(line.split(b":")[0] in (b"X-Keywords",) for line in head_lines[2 + len(original):])
        assert body == quote_from_lines(expected_body(lines, final_newline))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(messages(), min_size=1, max_size=6), chunk=st.integers(min_value=1, max_value=300))
def test_scan_does_not_depend_on_the_read_size(sandbox, batch, chunk):
    """The scanner reads in chunks; where the chunks fall must never change what it finds."""
    import os

    from mailsuite.store import scan as mbox
    sandbox.clear_spools()
    for _, _, _, raw in batch:
        sandbox.deliver("alice", raw)
    fd = os.open(sandbox.spool("alice"), os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        whole = [m.as_tuple() for m in mbox.scan_range(fd, 0, size)[0]]
        saved = mbox.CHUNK
        mbox.CHUNK = chunk
        try:
            pieces = [m.as_tuple() for m in mbox.scan_range(fd, 0, size)[0]]
        finally:
            mbox.CHUNK = saved
    finally:
        os.close(fd)
    assert pieces == whole
    assert len(whole) == len(batch)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(messages(), min_size=1, max_size=4), chunk=st.sampled_from([3, 64, 4 << 20]))
def test_client_sizes_are_what_servers_send(sandbox, batch, chunk):
    """The index knows a message's size on the wire (hidden headers out, CRLF) and its POP3 dot lines."""
    from mailsuite.store import scan as mbox
    from mailsuite.store.mailbox import served_body, served_header
    sandbox.clear_spools()
    for _, _, _, raw in batch:
        sandbox.deliver("alice", raw)
    saved = mbox.CHUNK
    mbox.CHUNK = chunk
    try:
        with open_spool(sandbox.cfg, sandbox.user("alice")) as box:
            for m in box.scan().messages:
                sent = served_header(box.read(m, m.header, m.body)) + served_body(box.read(m, m.body, m.end))
                assert m.client_size == len(sent)
                assert m.pop3_extra == sum(1 for line in sent.split(b"\r\n")[:-1] if line.startswith(b"."))
                assert b"X-Keywords" not in sent and b"Return-Path" in sent
    finally:
        mbox.CHUNK = saved


raw_lines = st.one_of(
    st.sampled_from([b"", b".", b"..", b".dot", b"From me Mon Jan  1 00:00:00 2024", b"From nobody", b">From x",
                     b"Status: RO", b"X-Status: AF", b"X-Keywords: $a $b", b"X-UID: 7", b"Content-Length: 5",
                     b"Content-Length: 0", b"X-IMAPbase: 17 0000000009", b" folded", b"\tfolded",
                     b"x\r", b"\r", b"Subject: s", b"status: R"]),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")))


@st.composite
def raw_mboxes(draw):
    """Whole mbox files as other programs may leave them: any header, Content-Length right or wrong, bare From_
    lines in bodies, dot lines, CRs, no final newline."""
    out = b""
    for _ in range(draw(st.integers(1, 5))):
        out += b"From sender@example.org Mon Jan  1 00:00:00 2024\n"
        head = draw(st.lists(raw_lines, max_size=8))
        body = draw(st.lists(raw_lines, max_size=8))
        if draw(st.booleans()):
            head.append(b"Content-Length: %d" % (len(b"\n".join(body)) + draw(st.integers(-2, 2))))
        out += b"\n".join(head) + (b"\n\n" if draw(st.booleans()) else b"\n") + b"\n".join(body)
        out += draw(st.sampled_from([b"\n\n", b"\n", b""]))
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=raw_mboxes(), chunk=st.sampled_from([7, 200, 4 << 20]))
def test_the_quick_scan_finds_what_the_general_scan_finds(tmp_path_factory, monkeypatch, data, chunk):
    """The scanner's quick path for common messages, and where it hands over to the general one, change nothing."""
    import os

    from mailsuite.store import scan
    path = tmp_path_factory.mktemp("quick") / "mbox"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        with monkeypatch.context() as m:
            m.setattr(scan, "CHUNK", chunk)
            quick = [msg.as_tuple() for msg in scan.scan_range(fd, 0, size)[0]]
            m.setattr(scan, "_quick", lambda buf, base, pos, size, builder: (pos, 0))
            general = [msg.as_tuple() for msg in scan.scan_range(fd, 0, size)[0]]
    finally:
        os.close(fd)
    assert quick == general
