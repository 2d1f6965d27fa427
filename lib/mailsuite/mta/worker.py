"""Delivery attempts of queued messages, a batch at a time, start to finish.

For each message of a batch, the worker claims it, resolves each
recipient that is not final yet into targets (routing.py) and gathers its
mailbox deliveries; then it appends, for each mailbox, every message of
the batch at once (one lock, one crash record, one fsync: group commit);
then, message by message, it delivers to files and commands (agents.py)
and hands the remote recipients to `smtp.client.deliver_remote` in one
call, and writes a record for every result before doing anything else (a
remote domain's as soon as that domain is done).  A target already delivered in
an earlier attempt (or for another recipient of the same message) is
never delivered twice, so a worker killed half-way leaves messages that
the next attempt finishes without duplicates; a mailbox append it was
killed in the middle of recording is found in the mailbox, not made again
(once.py).

Then, per message: bounces (dsn.py) for recipients that failed for good,
or that are still failing when the message is older than `max_lifetime`;
success notices when the sender asked (NOTIFY=SUCCESS); and the message is
either removed (every recipient final) or deferred with a growing
back-off.  The records are plain writes, seen by whoever reads the file
next even if this process is killed; what makes them durable is the fsync
of the mailbox they report on, of the file before a deferral, and of the
queue directory after the removals, once per batch.  A power cut can
therefore cost a duplicate, never a message.

A message whose attempt fails in an unexpected way (a bug) is left in
active/ as a crashed worker's would be: the runner takes it back
(`Queue.recover`), and the rest of the batch goes on.
"""

import os
import time

from ..core import fileio, log
from ..core.address import origin_domain, qualify
from ..lda.once import AppendOnce
from . import agents, dsn
from .queue import backoff
from .routing import RouteError, Router

BOUNCE = "mailsuite:bounce"
DOUBLE_BOUNCE = "mailsuite:double-bounce"


class Outcome:
    """How one message's attempt ended: removed, deferred until `retry`, or failed (`error`)."""

    __slots__ = ("notifications", "retry", "error")

    def __init__(self):
        self.notifications = []
        self.retry = None
        self.error = None


def deliver_message(cfg, queue, qid, logger, *, states=("incoming", "deferred"), router=None):
    """Claim QID and make one attempt: the ids of the notifications it queued,
    or None when someone else has the message or it is gone."""
    outcome = deliver_batch(cfg, queue, [qid], logger, states=states, router=router).get(qid)
    if outcome is None:
        return None
    if outcome.error is not None:
        raise outcome.error
    return outcome.notifications


def deliver_batch(cfg, queue, qids, logger, *, states=("incoming", "deferred"), router=None):
    """Claim each of QIDS and make one attempt of each: {qid: Outcome} of those claimed."""
    router = router or Router(cfg, logger=logger)
    mailboxes = agents.MailboxDeliveries(cfg, logger)
    attempts = []
    try:
        for qid in qids:
            claim = queue.claim(qid, states)
            if claim is not None:
                attempt = Attempt(cfg, queue, claim, logger, router, mailboxes)
                attempts.append(attempt)
                attempt.step(attempt.begin)
        mailboxes.flush()
        for attempt in attempts:
            attempt.step(attempt.finish)
        if any(attempt.removed for attempt in attempts):
            fileio.fsync_dir(os.path.join(queue.dir, "active"))
    finally:
        for attempt in attempts:
            attempt.claim.release()
    return {attempt.id: attempt.outcome for attempt in attempts}


class Attempt:
    def __init__(self, cfg, queue, claim, logger, router, mailboxes):
        self.cfg, self.queue, self.claim, self.logger, self.router = cfg, queue, claim, logger, router
        self.mailboxes = mailboxes
        self.env = claim.envelope
        self.id = claim.id
        self.outcome = Outcome()
        self.notifications = self.outcome.notifications
        self.removed = False
        self.sent_keys = {t for (_r, t), rec in self.env.results.items() if t and rec.get("s") == "sent"}
        self.pending, self.targets, self.remote, self.others = [], {}, {}, []

    def step(self, work):
        """Run one part of the attempt; an unexpected error ends it, leaving the message to the runner."""
        if self.outcome.error is not None:
            return
        try:
            work()
        except Exception as exc:        # noqa: BLE001 - the other messages of the batch go on
            self.logger.exception("%s: delivery attempt failed", self.id)
            self.outcome.error = exc
            self.mailboxes.forget(self)

    # --- records -------------------------------------------------------

    def _status(self, rcpt, key):
        if key in self.sent_keys:
            return "sent"
        record = self.env.result(rcpt, key)
        return record.get("s") if record else None

    def _final(self, rcpt):
        record = self.env.result(rcpt, "")
        return record is not None and record.get("s") in ("sent", "bounced")

    def _record(self, rcpt, key, result, *, to=None, setup=0.0, transfer=0.0):
        self.claim.record(r=rcpt, t=key, s=result.status, dsn=result.dsn, reply=result.reply,
                          relay=result.relay)
        if result.status == "sent" and key:
            self.sent_keys.add(key)
        if to is not None:
            self._log(to, rcpt, result, setup, transfer)

    def _log(self, to, rcpt, result, setup, transfer):
        """The delivery line, as Postfix writes it: delay= since arrival, delays=a/b/c/d.

        a: arrival until safely queued; b: in the queue until this attempt's
        transport began; c: connection set-up; d: the transfer itself."""
        now = time.time()
        env = self.env
        before_queue = max(0.0, env.queued - env.arrival)
        in_queue = max(0.0, now - setup - transfer - env.queued)
        delays = "/".join(_seconds(d) for d in (before_queue, in_queue, setup, transfer))
        level = self.logger.info if result.status != "bounced" else self.logger.warning
        level("%s: %s", self.id, log.fields(
            to=f"<{to}>", orig_to=f"<{rcpt}>" if to != rcpt else None, relay=result.relay,
            delay=_seconds(now - env.arrival), delays=delays, dsn=result.dsn,
            status=f"{result.status} ({result.reply})"))

    # --- the attempt ---------------------------------------------------

    def begin(self):
        """Route every recipient not final yet; hand the mailbox deliveries over to the batch."""
        self.pending = [r for r in self.env.recipients if not self._final(r)]
        for rcpt in self.pending:
            try:
                self.targets[rcpt] = self.router.resolve(rcpt)
            except RouteError as exc:
                self._record(rcpt, "route", agents.Result("deferred", exc.dsn, exc.reason, "none"), to=rcpt)
                self.targets[rcpt] = None
                continue
            for target in self.targets[rcpt]:
                self._sort(rcpt, target)

    def finish(self):
        """After the mailbox appends: files and commands, the remote recipients, then the outcome."""
        for rcpt, target in self.others:
            started = time.time()
            with self.claim.message() as message:
                result = agents.deliver_target(self.cfg, target, message, sender=self.env.sender,
                                               recipient=rcpt, queue_id=self.id)
            self._record(rcpt, target.key, result, to=_describe(self.cfg, target), transfer=time.time() - started)
        if self.remote:
            self._deliver_remote(self.remote)
        self._conclude(self.pending, self.targets)

    def _sort(self, rcpt, target):
        """Each target to its turn: errors now, mailboxes with the batch, files and commands after, remote last."""
        status = self._status(rcpt, target.key)
        if status in ("sent", "bounced"):
            return
        if target.kind == "error":
            self._record(rcpt, target.key, agents.Result("bounced", target.dsn, target.value, "none"), to=rcpt)
        elif target.kind == "remote":
            self.remote.setdefault(target.value, []).append(rcpt)
        elif target.kind == "mailbox":
            self._deliver_mailbox(rcpt, target, status)
        else:
            self.others.append((rcpt, target))

    def _deliver_mailbox(self, rcpt, target, status):
        previous = self.env.result(rcpt, target.key)
        once = AppendOnce(lambda **fields: self.claim.record(r=rcpt, t=target.key, **fields),
                          previous if status == "appending" else None)

        def delivered(result, seconds):
            self._record(rcpt, target.key, result, to=_describe(self.cfg, target), transfer=seconds)
        with self.claim.message() as message:
            self.mailboxes.add(self, target.user, message, sender=self.env.sender, recipient=rcpt,
                               queue_id=self.id, once=once, delivered=delivered)

    def _deliver_remote(self, remote):
        """Every domain's results are recorded as soon as it is done: a worker killed
        while a slow domain answers never sends again to the domains before it."""
        from .smtp.client import deliver_remote

        def record(result):
            for rcpt in remote.get(result.recipient, ()):
                self._record(rcpt, f"remote:{result.recipient}", result, to=result.recipient,
                             setup=result.setup, transfer=result.transfer)

        with self.claim.message() as message:
            deliver_remote(self.cfg, self.env.sender, list(remote), message, on_result=record)

    def _conclude(self, pending, targets):
        env = self.env
        expired = time.time() - env.arrival >= self.cfg.queue.max_lifetime
        failed, succeeded, waiting = [], [], []
        for rcpt in pending:
            keys = ["route"] if targets[rcpt] is None else [t.key for t in targets[rcpt]]
            states = [self._status(rcpt, k) for k in keys]
            if any(s not in ("sent", "bounced") for s in states):
                if not expired:
                    waiting.append(rcpt)
                    continue
                self._expire(rcpt, keys)
                failed.append(rcpt)
            elif any(s == "bounced" for s in states):
                self.claim.record(r=rcpt, t="", s="bounced")
                failed.append(rcpt)
            else:
                self.claim.record(r=rcpt, t="", s="sent")
                succeeded.append(rcpt)
        self._notify(failed, targets, "failed")
        self._notify(succeeded, targets, "delivered")
        if waiting:
            reason = self._reason(waiting, targets)
            self.claim.record(deferred=round(time.time(), 3), reason=reason)
            delay = backoff(self.cfg, env.attempts)
            self.outcome.retry = time.time() + delay
            self.claim.defer(self.outcome.retry)
            self.logger.info("%s: deferred %d recipient(s), next attempt in %ds (%s)",
                             self.id, len(waiting), delay, reason)
        else:
            self.claim.done(sync=False)         # the batch fsyncs active/ once for all its removals
            self.removed = True
            self.logger.info("%s: removed", self.id)

    def _expire(self, rcpt, keys):
        for key in keys:
            record = self.env.result(rcpt, key)
            if self._status(rcpt, key) not in ("sent", "bounced"):
                reason = record.get("reply", "") if record else ""
                days = self.cfg.queue.max_lifetime / 86400
                result = agents.Result("bounced", "4.4.7",
                                       f"message expired after {days:g} days in the queue: {reason}".rstrip(": "),
                                       record.get("relay", "none") if record else "none")
                self._record(rcpt, key, result, to=rcpt)
        self.claim.record(r=rcpt, t="", s="bounced")

    def _reason(self, rcpts, targets):
        for rcpt in rcpts:
            keys = ["route"] if targets[rcpt] is None else [t.key for t in targets[rcpt]]
            for key in keys:
                record = self.env.result(rcpt, key)
                if record and record.get("s") == "deferred":
                    return record.get("reply", "")
        return "delivery deferred"

    # --- notifications -------------------------------------------------

    def _notify(self, rcpts, targets, action):
        env = self.env
        notices = []
        for rcpt in rcpts:
            if rcpt in env.notified or not self._wants(rcpt, action):
                continue
            keys = ["route"] if targets[rcpt] is None else [t.key for t in targets[rcpt]]
            for key in keys:
                record = env.result(rcpt, key) or {}
                if action == "failed" and self._status(rcpt, key) != "bounced":
                    continue
                done_action = "relayed" if action == "delivered" and key.startswith("remote:") else action
                notices.append(dsn.Notice(rcpt, done_action, record.get("dsn", "5.0.0"),
                                          record.get("reply", ""), record.get("relay", ""),
                                          env.dsn.get("orcpt", {}).get(rcpt, "")))
        if not notices:
            return
        to, client = env.sender, BOUNCE
        if not env.sender:
            if action != "failed" or env.client == DOUBLE_BOUNCE:
                self.logger.warning("%s: undeliverable notification discarded", self.id)
                self.claim.record(notified=sorted({n.recipient for n in notices}))
                return
            to, client = qualify(self.cfg.queue.postmaster, origin_domain(self.cfg)), DOUBLE_BOUNCE
        with self.claim.message() as message:
            data = dsn.build(self.cfg, env, notices, message, to=to, action=action)
        new_id = self.queue.enqueue("", [to], data, client=client)
        self.notifications.append(new_id)
        self.claim.record(notified=sorted({n.recipient for n in notices}))
        kind = "non-delivery" if action == "failed" else "delivery"
        self.logger.info("%s: sender %s notification: %s", self.id, kind, new_id)

    def _wants(self, rcpt, action):
        notify_map = self.env.dsn.get("notify") or {}
        notify = notify_map.get(rcpt, notify_map.get("*", ""))
        words = {w.strip().upper() for w in notify.split(",") if w.strip()}
        if action == "failed":
            return not words or "FAILURE" in words
        return "SUCCESS" in words


def _describe(cfg, target):
    """How a local target appears in the to= of a log line."""
    if target.kind == "mailbox":
        return qualify(target.value, cfg.hostname)
    return f"|{target.value}" if target.kind == "command" else target.value


def _seconds(value):
    """A delay as the logs write it: hundredths below 100 s, whole seconds above."""
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"
