"""The queue runner's delivery workers: long-lived processes, fed batches of queue ids over socket pairs.

Forking a process for every message costs more than delivering it.  So the
runner keeps up to `[queue] max_workers` worker processes, forked when
there is work and none is free, and sends each free one a batch of due
queue ids over its socket pair (SOCK_SEQPACKET); the worker makes one
attempt of each (worker.deliver_batch, which appends all the batch's
messages for one mailbox at once) and answers with each one's outcome.
A worker serves MAX_USE messages, then says so and exits, and a new one
takes its place when there is work: whatever one batch leaked is bounded.
Workers read the aliases and users afresh for every batch.

Crashes: a worker that dies (a bug, a SIGKILL, the OOM killer) costs each
message of its batch one attempt: the runner sees it end and takes them
back (`Queue.recover`), deferred with the back-off of a failed attempt,
held after `hold_after_crashes` crashes.  When the batch held several
messages, they are due again at once, and each is then tried in a batch
of its own, so a message that kills its worker costs the others of its
batch one immediate retry, and is held on its own.  A message whose
attempt failed without killing the worker (an unexpected error) is taken
back the same way, alone.

The protocol: the runner sends "QID QID ..."; the worker answers "d" (or
"q" when it is about to exit) followed by QID:r (removed), QID:d:TIME
(deferred until TIME), QID:f (failed: take it back) or QID:- (not
claimed: gone, or someone else has it) for each.
"""

import os
import selectors
import socket

from ..core import children
from .worker import deliver_batch

BATCH = 32                 # at most this many messages per batch
MAX_USE = 2000             # messages a worker attempts before it is replaced


class Worker:
    """The runner's view of one worker process."""

    __slots__ = ("pid", "channel", "batch", "exiting")

    def __init__(self, pid, channel):
        self.pid, self.channel = pid, channel
        self.batch = []                  # the queue ids it holds; empty when free
        self.exiting = False


class WorkerPool:
    """Up to SIZE workers; SELECTOR (the runner's) watches their channels."""

    def __init__(self, cfg, queue, logger, selector, *, size=None, recover=None, runner_fds=()):
        """RECOVER(reasons, retry_now) takes back the messages of a worker that died (runner.recover).

        RUNNER_FDS are the runner's own descriptors, which a worker closes:
        above all its runner lock, which a worker outliving a killed runner
        would otherwise hold for it, keeping a successor waiting."""
        self.cfg, self.queue, self.logger, self.selector = cfg, queue, logger, selector
        self.runner_fds = tuple(runner_fds)
        self.size = max(1, size or cfg.queue.max_workers)
        self.recover = recover
        self.workers = {}                # pid -> Worker
        self.suspects = set()            # messages of a batch whose worker died: each tried alone

    # --- what the runner asks --------------------------------------------

    def busy(self, qid):
        return any(qid in w.batch for w in self.workers.values())

    def working(self):
        return any(w.batch for w in self.workers.values())

    def _free(self):
        return [w for w in self.workers.values() if not w.batch and not w.exiting and w.channel is not None]

    def _room(self):
        return self.size - sum(1 for w in self.workers.values() if not w.exiting)

    def full(self):
        return not self._free() and self._room() <= 0

    def dispatch(self, pending):
        """Send due messages from PENDING (an ordered dict of queue ids, oldest first) to free workers.

        What is sent is taken out of PENDING; the rest waits for a free worker."""
        while pending:
            free = self._free()
            available = len(free) + max(0, self._room())
            if not available:
                return
            first = next(iter(pending))
            if first in self.suspects:
                batch = [first]
                self.suspects.discard(first)
            else:
                share = min(BATCH, max(1, -(-len(pending) // available)))
                batch = []
                for qid in pending:
                    if len(batch) == share:
                        break
                    if qid not in self.suspects:
                        batch.append(qid)
            for qid in batch:
                del pending[qid]
            batch = [qid for qid in batch if not self.busy(qid)]
            if batch:
                worker = free[-1] if free else self._start()
                if worker is None:
                    for qid in batch:
                        pending[qid] = None
                    return
                self._send(worker, batch)

    def heard(self, worker):
        """The worker wrote: [(qid, outcome, retry time or None)] of its finished batch."""
        try:
            said = worker.channel.recv(1 << 20).decode("ascii", "replace").split()
        except OSError:
            said = []
        if not said:                     # end of file: it exited or died; reap() tells which
            self._close(worker)
            return []
        worker.exiting = said[0] == "q"
        results = []
        for word in said[1:]:
            qid, _, rest = word.partition(":")
            kind, _, when = rest.partition(":")
            results.append((qid, kind, float(when) if when else None))
        worker.batch = []
        failed = {qid: "its delivery attempt failed (see the log)" for qid, kind, _ in results if kind == "f"}
        if failed and self.recover:
            self.recover(failed, ())
        if worker.exiting:
            self._close(worker)
        return results

    def reap(self, block=False):
        """Wait for workers that ended; take back what a dead one held.  True if any had messages."""
        lost = False
        while self.workers:
            ended = children.reap(block)
            if not ended:
                return lost
            for pid, status in ended:
                worker = self.workers.pop(pid, None)
                if worker is None:
                    continue
                if worker.channel is not None and worker.batch:
                    self._last_words(worker)
                self._close(worker)
                if worker.batch:
                    lost = True
                    self._lost(worker, os.waitstatus_to_exitcode(status))
            if block:
                return lost
        return lost

    def stop(self):
        """Let the batches being delivered finish, then every worker exits; returns once they have."""
        while self.working():
            self.wait()
        for worker in list(self.workers.values()):
            self._close(worker)
        while self.workers:
            self.reap(block=True)

    def wait(self, timeout=1.0):
        """Hear from the workers (or of their end) once; for callers without a loop of their own (run_once)."""
        for key, _ in self.selector.select(timeout):
            if isinstance(key.data, Worker) and key.data.channel is not None:
                self.heard(key.data)
        self.reap()

    # --- the workers -----------------------------------------------------

    def _start(self):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        others = [w.channel for w in self.workers.values() if w.channel is not None]
        try:
            pid = children.fork_child(lambda: self._serve(theirs, [ours] + others), self.logger, "delivery worker")
        except OSError as exc:
            self.logger.error("cannot start a delivery worker: %s", exc)
            ours.close()
            theirs.close()
            return None
        theirs.close()
        worker = self.workers[pid] = Worker(pid, ours)
        self.selector.register(ours, selectors.EVENT_READ, worker)
        return worker

    def _serve(self, channel, inherited):
        """In a new worker: none of the runner's descriptors, then batches from CHANNEL until told to go."""
        self.selector.close()
        for sock in inherited:
            sock.close()
        for fd in self.runner_fds:
            os.close(fd)
        serve(self.cfg, self.queue, self.logger, channel)

    def _send(self, worker, batch):
        worker.batch = list(batch)
        try:
            worker.channel.send(" ".join(batch).encode("ascii"))
        except OSError:                       # it died meanwhile: reap() takes the batch back
            self._close(worker)

    def _last_words(self, worker):
        """A worker that ended may have answered first: read it before judging its batch lost."""
        try:
            worker.channel.setblocking(False)
            if worker.channel.recv(1, socket.MSG_PEEK):
                self.heard(worker)
        except OSError:
            pass

    def _close(self, worker):
        if worker.channel is not None:
            self.selector.unregister(worker.channel)
            worker.channel.close()
            worker.channel = None

    def _lost(self, worker, code):
        how = f"exited with status {code}" if code >= 0 else f"killed by signal {-code}"
        self.logger.warning("delivery worker %d %s holding %s", worker.pid, how, " ".join(worker.batch))
        retry_now = set(worker.batch) if len(worker.batch) > 1 else set()
        self.suspects |= retry_now
        if self.recover:
            self.recover({qid: f"delivery worker {how}" for qid in worker.batch}, retry_now)


def serve(cfg, queue, logger, channel, max_use=MAX_USE):
    """The worker process: batches from CHANNEL, one attempt of each message, the outcomes back."""
    served = 0
    while served < max_use:
        try:
            request = channel.recv(1 << 20)
        except OSError:
            return
        if not request:
            return                           # the runner closed our channel: stop
        qids = request.decode("ascii", "replace").split()
        outcomes = deliver_batch(cfg, queue, qids, logger)
        served += len(qids)
        words = ["q" if served >= max_use else "d"]
        for qid in qids:
            outcome = outcomes.get(qid)
            if outcome is None:
                words.append(f"{qid}:-")
            elif outcome.error is not None:
                words.append(f"{qid}:f")
            elif outcome.retry is not None:
                words.append(f"{qid}:d:{outcome.retry:.3f}")
            else:
                words.append(f"{qid}:r")
        try:
            channel.send(" ".join(words).encode("ascii"))
        except OSError:
            return
