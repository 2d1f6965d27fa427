"""mailq(1): the queue as Postfix's mailq shows it, so habits and scripts carry over.

One entry per message: queue id (followed by `*` while a worker delivers
it, `!` while it is held), size, arrival time and sender, then each
recipient still waiting, under the reason of its last deferral, or the
reason it is held.  What senders and remote servers wrote is quoted
(log.quote): mailq never sends a control character to a terminal.
"""

import os
import time

from ..core.log import quote
from .dropdir import MAGIC
from .queue import Queue, valid_id

HEADER = f"{'-Queue ID-':<18}{'--Size--':>8} {'----Arrival Time----':<20} -Sender/Recipient-------"
MARKS = {"active": "*", "hold": "!"}


def show(cfg, out):
    queue = Queue(cfg)
    envelopes = list(queue.envelopes())
    waiting = _maildrop_count(cfg)
    if not envelopes:
        print("Mail queue is empty", file=out)
    else:
        print(HEADER, file=out)
        total = 0
        for env in envelopes:
            total += env.size
            _entry(env, out)
        kbytes = (total + 1023) // 1024
        count = len(envelopes)
        print(f"-- {kbytes} Kbytes in {count} Request{'s' if count != 1 else ''}.", file=out)
    if waiting:
        print(f"-- {waiting} message{'s' if waiting != 1 else ''} in the maildrop waiting for pickup.",
              file=out)
    return 0


def _entry(env, out):
    arrival = time.strftime("%a %b %d %H:%M:%S", time.localtime(env.arrival))
    ident = env.id + MARKS.get(env.state, "")
    print(f"{ident:<18}{env.size:>8} {arrival:<20} {quote(env.sender) or 'MAILER-DAEMON'}", file=out)
    by_reason = {}
    for rcpt in env.recipients:
        final = env.result(rcpt, "")
        if final and final.get("s") in ("sent", "bounced"):
            continue
        reason = env.held if env.state == "hold" and env.held else _reason(env, rcpt) or env.reason or ""
        by_reason.setdefault(quote(reason), []).append(rcpt)
    for reason, rcpts in by_reason.items():
        if reason:
            print(f"{'(' + reason + ')':<48}", file=out)
        for rcpt in rcpts:
            print(f"{'':<48}{quote(rcpt)}", file=out)
    print(file=out)


def _reason(env, rcpt):
    """The last deferral reason recorded for RCPT's targets."""
    latest = None
    for (r, _t), record in env.results.items():
        if r == rcpt and record.get("s") == "deferred":
            if latest is None or record.get("at", 0) >= latest.get("at", 0):
                latest = record
    if latest:
        return " ".join(str(latest.get("reply", "")).split())[:200]
    return ""


def _maildrop_count(cfg):
    directory = cfg.mailsuite.maildrop_dir
    try:
        names = [n for n in os.listdir(directory) if valid_id(n)]
    except OSError:
        return 0
    count = 0
    for name in names:
        try:
            with open(os.path.join(directory, name), "rb") as f:
                count += f.read(len(MAGIC)) == MAGIC
        except OSError:
            continue
    return count


def detail(queue, qid, out):
    """`mailsuite queue show ID`: everything the queue knows of one message, and its header."""
    env = queue.load(qid)
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(env.arrival))
    lines = [("queue id", env.id), ("state", env.state + (f" ({env.held})" if env.held else "")),
             ("arrival", when), ("size", f"{env.size} bytes"), ("sender", env.sender or "MAILER-DAEMON"),
             ("client", env.client), ("authenticated", env.auth_user), ("attempts", env.attempts),
             ("crashes", env.crashes or None), ("last deferral", env.reason)]
    if env.state == "deferred":
        lines.append(("next attempt", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(env.mtime))))
    for name, value in lines:
        if value not in (None, ""):
            print(f"{name + ':':<15}{quote(str(value))}", file=out)
    for rcpt in env.recipients:
        final = env.result(rcpt, "")
        state = final.get("s") if final else "waiting"
        print(f"{'recipient:':<15}{quote(rcpt)}  {state}{_why(env, rcpt)}", file=out)
    print(file=out)
    _, path = queue.locate(qid)
    with open(path, "rb") as f:
        f.seek(env.offset)
        for line in f:
            if line in (b"\n", b"\r\n"):
                break
            text = line.rstrip(b"\r\n").decode("utf-8", "replace").expandtabs()   # folded lines start with a tab
            print(quote(text), file=out)
    return 0


def _why(env, rcpt):
    reason = _reason(env, rcpt)
    return f" ({quote(reason)})" if reason else ""
