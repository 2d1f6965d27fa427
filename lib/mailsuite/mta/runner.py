"""The queue runner: pickup, scheduling, and a bounded pool of delivery workers.

`run_once()` is `sendmail -q` when no daemon runs: pick up the maildrop,
then one attempt for every message that is due (or only the ones asked
for), and return when the workers are done.  `run_forever()` is the
daemon's runner: inotify tells it of each new queue file (by name, so a
big queue is never listed for one message), of new drop files, and of
`runnerlock.wake()`; a full scan of the queue (taking back the messages of
dead workers, finding what is due in deferred/) runs every `run_interval`
and when the earliest deferred message comes due.  The work goes to at
most `queue.max_workers` long-lived worker processes, a batch at a time
(workerpool.py), so a crash or a SIGKILL costs one attempt of the messages
being delivered: their files stay in active/ and `Queue.recover()` takes
them back, deferred like a failed attempt, held after a few crashes.
Nothing that goes wrong with one message or one drop file stops the runner.

While a runner lives it holds the runner lock (runnerlock.py), which tells
`sendmail` that mail dropped now will be picked up without its help.
"""

import os
import selectors
import signal
import time
from collections import OrderedDict

import pyinotify

from ..core import fileio
from . import runnerlock
from .pickup import pickup_all
from .queue import Queue, QueueError, valid_id
from .workerpool import WorkerPool

MIN_SLEEP = 0.05
MAX_SLEEP = 60.0
ERROR_PAUSE = 5                 # after an unexpected error, the next full scan comes this soon


def run_once(cfg, logger, *, ids=None):
    """One queue run; IDS forces an attempt for just those messages, due or not.

    Mail the run itself queues (bounces, and their bounces) gets its first
    attempt in the same run, so `sendmail -q` without a daemon leaves no
    notification behind."""
    queue = Queue(cfg)
    queue.ensure_dirs()
    recover(queue, logger)
    pickup_all(cfg, queue, logger)
    pending = OrderedDict()

    def take_back(reasons, retry_now):
        recover(queue, logger, reasons, retry_now)
        pending.update(OrderedDict.fromkeys(retry_now))     # a dead worker's batch: again, one at a time

    with selectors.DefaultSelector() as selector:
        pool = WorkerPool(cfg, queue, logger, selector, recover=take_back)
        try:
            seen = {qid for _state, qid in queue.ids(("incoming",))}
            todo = queue.due() if ids is None else list(ids)
            for _generation in range(3):            # the mail, its bounces, double bounces
                pending.update(OrderedDict.fromkeys(todo))
                while pending or pool.working():
                    pool.dispatch(pending)
                    pool.wait()
                todo = [qid for _state, qid in queue.ids(("incoming",)) if qid not in seen]
                seen.update(todo)
        finally:
            pool.stop()
    return 0


def flush(cfg, logger, ids=None):
    """`sendmail -q[I|R|S]`: every queued message (or those of IDS) is tried now, due or not."""
    queue = Queue(cfg)
    for qid in [None] if ids is None else ids:
        try:
            queue.flush(qid)
        except QueueError:              # being delivered, or gone meanwhile: nothing to hurry
            continue
    return kick(cfg, logger, ids)


def kick(cfg, logger, ids=None):
    """Have the due mail (or IDS) tried now: a running daemon's runner is woken to do it,
    else this process runs the queue itself and returns when the attempts are done."""
    queue = Queue(cfg)
    if runnerlock.active(queue.dir):
        runnerlock.wake(queue.dir)
        return 0
    return run_once(cfg, logger, ids=ids)


def run_forever(cfg, logger, *, interval=None):
    """The daemon's runner; returns after SIGTERM once its workers have finished."""
    runner = _Runner(cfg, logger, interval or cfg.queue.run_interval)
    try:
        runner.loop()
    finally:
        runner.close()


class _Runner:
    """The daemon's runner: what it watches, what is waiting for a worker, when it scans next."""

    def __init__(self, cfg, logger, interval):
        self.cfg, self.logger, self.interval = cfg, logger, interval
        self.queue = Queue(cfg)
        self.queue.ensure_dirs()
        self.lock = runnerlock.hold(self.queue.dir)
        self.incoming = os.path.join(self.queue.dir, "incoming")
        self.maildrop = cfg.mailsuite.maildrop_dir
        self.pending = OrderedDict()     # due queue ids waiting for a worker, oldest first
        self.next_scan = 0.0             # the next full scan...
        self.next_due = None             # ...or sooner, when the earliest deferred message comes due
        self.scan_now = self.pickup_now = self.stopping = self.children = False
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe()
        for fd in (self.wake_r, self.wake_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, self._signal)
        signal.signal(signal.SIGTERM, self._signal)
        signal.signal(signal.SIGINT, self._signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)     # workers read the aliases for every batch
        self.selector.register(self.wake_r, selectors.EVENT_READ, "signal")
        self.watches = pyinotify.WatchManager()
        mask = pyinotify.IN_MOVED_TO | pyinotify.IN_CLOSE_WRITE | pyinotify.IN_CREATE
        for directory in (self.maildrop, self.incoming, self.queue.dir):
            if os.path.isdir(directory):             # the queue itself for runnerlock.wake()
                self.watches.add_watch(directory, mask, quiet=True)
        self.notifier = pyinotify.Notifier(self.watches, default_proc_fun=self._event, timeout=0)
        self.selector.register(self.watches.get_fd(), selectors.EVENT_READ, "inotify")
        self.pool = WorkerPool(cfg, self.queue, logger, self.selector, recover=self._recover,
                               runner_fds=(self.lock, self.wake_r, self.wake_w, self.watches.get_fd()))
        logger.info("queue runner started (%d workers, scan every %ds)", self.pool.size, interval)

    def _signal(self, signum, _frame):
        if signum == signal.SIGCHLD:
            self.children = True
        else:
            self.stopping = True

    def _event(self, event):
        """An inotify event: a new queue file is pending by its name; anything else asks for a look."""
        if event.path == self.incoming:
            if valid_id(event.name):
                self.pending[event.name] = None
        elif event.path == self.maildrop:
            self.pickup_now = True
        elif event.name == runnerlock.WAKE:
            self.scan_now = True

    def _recover(self, reasons, retry_now):
        recover(self.queue, self.logger, reasons, retry_now)
        self.scan_now = True

    def loop(self):
        while not self.stopping:
            try:
                self._work()
            except Exception:                   # noqa: BLE001 - the runner outlives any one problem
                self.logger.exception("queue runner: unexpected error; going on")
                self.next_scan = min(self.next_scan, time.time() + ERROR_PAUSE)
            if self.stopping:
                break
            for key, _ in self.selector.select(self._sleep_time()):
                if key.data == "signal":
                    fileio.drain(self.wake_r)
                elif key.data == "inotify":
                    self.notifier.read_events()
                    self.notifier.process_events()
                elif key.data.channel is not None:
                    self._heard(key.data)

    def _work(self):
        """Reap, scan or pick up as needed, then hand what is due to free workers."""
        if self.children:
            self.children = False
            self.pool.reap()
        now = time.time()
        if self.scan_now or now >= self.next_scan or (self.next_due is not None and now >= self.next_due):
            if now >= self.next_scan:
                self.next_scan = now + self.interval
                recover(self.queue, self.logger)
            self.scan_now, self.pickup_now = False, True
            self.pending.update(OrderedDict.fromkeys(self.queue.due(now)))
            self.next_due = self.queue.next_due()
        if self.pickup_now:
            self.pickup_now = False
            for qid in pickup_all(self.cfg, self.queue, self.logger):
                self.pending[qid] = None
        self.pool.dispatch(self.pending)

    def _heard(self, worker):
        for _qid, kind, when in self.pool.heard(worker):
            if kind == "d" and when is not None:
                self.next_due = when if self.next_due is None else min(self.next_due, when)

    def _sleep_time(self):
        """Seconds until the runner has something to do, if nothing wakes it first."""
        if self.scan_now or self.pickup_now or self.children:
            return 0
        wake_at = self.next_scan if self.next_due is None else min(self.next_scan, self.next_due)
        return min(max(MIN_SLEEP, wake_at - time.time()), MAX_SLEEP)

    def close(self):
        self.selector.unregister(self.wake_r)              # from now on only the workers are heard
        self.selector.unregister(self.watches.get_fd())
        try:
            self.pool.stop()
        finally:
            self.notifier.stop()
            signal.set_wakeup_fd(-1)
            self.selector.close()
            os.close(self.wake_r)
            os.close(self.wake_w)
            os.close(self.lock)
            self.logger.info("queue runner stopped")


def recover(queue, logger, reasons=None, retry_now=()):
    """Take back the messages of dead workers and clean what dead writers left in tmp/."""
    for qid, state in queue.recover(reasons, retry_now).items():
        if state == "corrupt":
            logger.error("%s: damaged queue file; moved to the corrupt directory", qid)
        elif state == "hold":
            logger.warning("%s: held: its delivery worker crashed %d times", qid,
                           queue.cfg.queue.hold_after_crashes)
        else:
            logger.info("%s: taken back from a dead delivery worker; %s", qid, state)
    removed = queue.clean_tmp()
    if removed:
        logger.info("queue: removed %d file(s) left in tmp/ by writers that died", len(removed))
