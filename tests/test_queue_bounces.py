"""Bounces are RFC 3464 reports Python's email package can read; retries back off; mail expires."""

import email
import email.policy
import os
import time

import pytest
from mta_helpers import MESSAGE, queue_files, set_config, spool_messages

from mailsuite.mta.queue import Queue
from mailsuite.mta.worker import backoff


def send(sandbox, *args, data=MESSAGE):
    result = sandbox.run("sendmail", "-odi", "-i", *args, input=data)
    assert result.returncode == 0, result.stderr
    return result


def parse_report(msg):
    report = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    parts = list(report.iter_parts())
    assert [p.get_content_type() for p in parts][:2] == ["text/plain", "message/delivery-status"]
    return report, parts


def test_unknown_user_bounces_to_the_sender(sandbox):
    send(sandbox, "-f", "alice@localhost", "-R", "hdrs", "nosuchuser", data=b"Subject: lost\n\nbody\n")
    [bounce] = spool_messages(sandbox.spool("alice"))
    report, parts = parse_report(bounce)
    assert report["To"] == "alice@localhost"
    assert bounce.get_from().startswith("MAILER-DAEMON")          # sent from the null sender
    status = parts[1].get_payload()                               # per-message block, then recipients
    recipient = status[1]
    assert recipient["Final-Recipient"] == "rfc822; nosuchuser@localhost"
    assert recipient["Action"] == "failed"
    assert recipient["Status"] == "5.1.1"
    assert parts[2].get_content_type() == "text/rfc822-headers"
    assert "Subject: lost" in parts[2].get_content()
    assert queue_files(sandbox, "incoming") == queue_files(sandbox, "deferred") == []


def test_ret_full_returns_the_whole_message(sandbox):
    send(sandbox, "-f", "alice@localhost", "-R", "full", "nosuchuser", data=b"Subject: lost\n\nthe body\n")
    [bounce] = spool_messages(sandbox.spool("alice"))
    _report, parts = parse_report(bounce)
    assert parts[2].get_content_type() == "message/rfc822"
    assert "the body" in parts[2].as_string()


def test_partial_failure_delivers_the_rest_and_bounces_one(sandbox):
    send(sandbox, "-f", "alice@localhost", "bob", "nosuchuser")
    assert len(spool_messages(sandbox.spool("bob"))) == 1
    [bounce] = spool_messages(sandbox.spool("alice"))
    _report, parts = parse_report(bounce)
    assert [r["Final-Recipient"] for r in parts[1].get_payload()[1:]] == ["rfc822; nosuchuser@localhost"]


def test_null_sender_never_bounces_but_postmaster_hears(sandbox):
    (sandbox.dir / "aliases").write_text("postmaster: bob\n")
    send(sandbox, "-f", "<>", "nosuchuser")
    assert spool_messages(sandbox.spool("alice")) == []
    [double] = spool_messages(sandbox.spool("bob"))
    parse_report(double)
    assert double["To"].startswith("postmaster@")


def test_notify_success_sends_a_delivery_report(sandbox):
    send(sandbox, "-f", "alice@localhost", "-N", "success", "bob")
    [report] = spool_messages(sandbox.spool("alice"))
    _report, parts = parse_report(report)
    assert parts[1].get_payload()[1]["Action"] == "delivered"


def test_notify_never_suppresses_the_bounce(sandbox):
    send(sandbox, "-f", "alice@localhost", "-N", "never", "nosuchuser")
    assert spool_messages(sandbox.spool("alice")) == []


def test_backoff_grows_and_is_capped(sandbox):
    cfg = sandbox.cfg
    delays = [backoff(cfg, n) for n in range(1, 10)]
    assert delays[0] == cfg.queue.min_backoff
    assert delays == sorted(delays)
    assert delays[-1] == cfg.queue.max_backoff


def test_deferral_schedules_a_retry_and_mailq_says_why(sandbox):
    (sandbox.dir / "aliases").write_text('later: "|echo mailbox busy; exit 75"\n')
    send(sandbox, "-f", "alice@localhost", "later")
    [qid] = queue_files(sandbox, "deferred")
    next_attempt = os.stat(sandbox.dir / "queue" / "deferred" / qid).st_mtime
    assert next_attempt - time.time() > sandbox.cfg.queue.min_backoff - 10
    listing = sandbox.run("sendmail", "-bp").stdout.decode()
    assert qid in listing and "alice@localhost" in listing and "later@localhost" in listing
    assert "mailbox busy" in listing
    assert "1 Request." in listing
    assert sandbox.run("sendmail", "-q").returncode == 0            # not due yet, flushed all the same (Postfix)
    assert Queue(sandbox.cfg).load(qid).attempts == 2
    assert queue_files(sandbox, "deferred") == [qid]


def test_expired_message_bounces_with_4_4_7(sandbox):
    (sandbox.dir / "aliases").write_text('later: "|exit 75"\n')
    set_config(sandbox, "queue", "max_lifetime", "1s")
    send(sandbox, "-f", "alice@localhost", "later")
    time.sleep(1.2)
    [qid] = queue_files(sandbox, "deferred")
    assert sandbox.run("sendmail", f"-qI{qid}").returncode == 0
    assert queue_files(sandbox, "deferred") == []
    [bounce] = spool_messages(sandbox.spool("alice"))
    _report, parts = parse_report(bounce)
    assert parts[1].get_payload()[1]["Status"] == "4.4.7"
    assert parts[1].get_payload()[1]["Action"] == "failed"


def test_operator_hold_release_delete(sandbox):
    queue = Queue(sandbox.cfg)
    held = queue.enqueue("x@localhost", ["alice@localhost"], MESSAGE)
    gone = queue.enqueue("x@localhost", ["bob@localhost"], MESSAGE)
    assert sandbox.run("mailsuite", "queue", "hold", held).returncode == 0
    assert sandbox.run("mailsuite", "queue", "delete", gone).returncode == 0
    assert f"{held}!" in sandbox.run("mailsuite", "queue", "list").stdout.decode()
    assert sandbox.run("sendmail", "-q").returncode == 0
    assert spool_messages(sandbox.spool("alice")) == spool_messages(sandbox.spool("bob")) == []
    assert sandbox.run("mailsuite", "queue", "release", held).returncode == 0
    assert sandbox.run("mailsuite", "queue", "flush").returncode == 0
    assert len(spool_messages(sandbox.spool("alice"))) == 1
    assert spool_messages(sandbox.spool("bob")) == []
    assert sandbox.run("mailsuite", "queue", "delete", "0123456789ABCDEF").returncode == os.EX_NOINPUT
    assert b"Mail queue is empty" in sandbox.run("sendmail", "-bp").stdout


@pytest.mark.parametrize("damage", ["directory", "garbage"])
def test_an_unusable_spool_defers_until_an_operator_fixes_it(sandbox, damage):
    """A spool that is a directory, or has bytes before its first From_ line: deferred (4.2.0), never
    bounced, and the file is not touched; once it is repaired the retry delivers."""
    spool = sandbox.spool("bob")
    kept = b"From x@example.org Mon Nov 23 10:00:00 2026\nSubject: old\n\nbody\n\n"
    spool.unlink()
    if damage == "directory":
        spool.mkdir()
    else:
        spool.write_bytes(b"stray bytes\n" + kept)
    send(sandbox, "-f", "alice@localhost", "bob")
    [qid] = queue_files(sandbox, "deferred")
    shown = sandbox.run("mailsuite", "queue", "show", qid).stdout.decode()
    assert "waiting" in shown and ("is a directory" in shown or "12 bytes before its first From_ line" in shown)
    assert spool.is_dir() if damage == "directory" else spool.read_bytes() == b"stray bytes\n" + kept
    assert queue_files(sandbox, "incoming") == [] and not any(
        "Undelivered" in m.get("Subject", "") for m in spool_messages(sandbox.spool("alice")))
    if damage == "directory":
        spool.rmdir()
    spool.write_bytes(kept)
    assert sandbox.run("sendmail", "-q").returncode == 0
    assert queue_files(sandbox, "deferred") == []
    assert [m["Subject"] for m in spool_messages(spool)] == ["old", "hello"]
