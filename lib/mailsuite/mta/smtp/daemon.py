"""The SMTP daemon (`sendmail -bd`, `-bD`) and SMTP on stdin/stdout (`sendmail -bs`).

The daemon's master process does three things and nothing else: it listens
on the `[smtp] listen` (and `listen_submission`) addresses through the
shared harness, up to `max_children` sessions at once (beyond that
`421 4.7.0`), each in a session process that serves up to `max_use`
connections one after another, as Postfix's smtpd processes do (no fork per
connection; SIGHUP retires them all after their current session); it keeps one queue runner child alive, starting
it again, with a back-off from 1 s doubling to a minute, whenever it ends
for any reason (the runner, in turn, ends with the master); and it
answers signals: SIGTERM stops accepting, lets running sessions finish,
stops the runner and exits; SIGHUP rereads the configuration (a broken file
is logged and the old one kept) and restarts the runner so it rereads the
aliases too.  `-bd` detaches (python-daemon: no controlling tty, pid file
in `state_dir`), `-bD` stays in the foreground.

Sessions hand each message to the queue, which fsyncs it before the
session may answer 250.  `sendmail -bs` runs the same session on stdin and
stdout for a local user, who may send anywhere, like the command line does.
"""

import gc
import os
import signal
import time

import lockfile

from ...core import children, config, hostport, log
from ...core.cli import Fatal
from ...server import auth, connection, listener, tls
from .. import queue, runner
from .session import R_TOO_MANY_AUTH_FAILURES, Disconnect, Policy, Session

RUNNER_RESTART_MIN = 1          # seconds before a runner that ended is started again...
RUNNER_RESTART_MAX = 60         # ...doubling while it keeps ending soon after its start,
RUNNER_HEALTHY = 60             # and back to the minimum once one ran this long


def parse_listen(items, default_port, key):
    """('0.0.0.0:25', '[::1]:587', 'localhost') -> [(host, port), ...]."""
    return [hostport.listen_address(item, default_port, key=f"[smtp] {key}") for item in items]


class Daemon:
    """The master: the configuration in force, the listener's session handler, the runner child."""

    def __init__(self, cfg, logger):
        self.cfg = cfg
        self.logger = logger
        self.runner_pid = None
        self.runner_started = 0.0
        self.restart_at = None          # when a runner that ended is started again
        self.restart_delay = 0
        self._prepare()

    def _prepare(self):
        """Everything derived from the configuration, rebuilt on SIGHUP."""
        self.tls = tls.tls_context_if_readable(self.cfg, "smtp", self.logger)
        self.submission_ports = {port for _, port in parse_listen(self.cfg.smtp.listen_submission, 587, "listen_submission")}
        self.policies = {False: Policy.from_config(self.cfg, submission=False),
                         True: Policy.from_config(self.cfg, submission=True)}

    def listeners(self):
        plain = parse_listen(self.cfg.smtp.listen, 25, "listen")
        submission = parse_listen(self.cfg.smtp.listen_submission, 587, "listen_submission")
        return [(host, port, False) for host, port in plain + submission]

    # --- sessions (in the forked child) -----------------------------------

    def session(self, conn):
        policy = self.policies[conn.local_port in self.submission_ports]
        Session(conn, policy, enqueue=queue_writer(self.cfg), logger=self.logger,
                authenticate=authenticator(self.cfg, self.logger, conn), tls_context=self.tls,
                plaintext_ok=lambda c: auth.plaintext_allowed(self.cfg, c),
                known_recipient=recipient_check(self.cfg), **_queue_errors()).run()

    # --- the runner child -------------------------------------------------

    def start_runner(self):
        master = os.getpid()

        def run_the_queue():
            _end_with(master)
            runner.run_forever(self.cfg, log.setup(self.cfg, "runner"))
        pid = children.fork_child(run_the_queue, self.logger, "queue runner")
        self.runner_pid = pid
        self.runner_started = time.monotonic()
        self.logger.info("queue runner started (pid %d)", pid)

    # the listener reaps every child; these two keep the runner alive (listener.serve_forking)

    def exited(self, pid, status):
        """A child that is no session ended: if it was the runner, plan its restart."""
        if pid != self.runner_pid:
            return                      # a runner replaced at SIGHUP
        self.runner_pid = None
        code = os.waitstatus_to_exitcode(status)
        how = f"exited with status {code}" if code >= 0 else f"was killed by signal {-code}"
        if time.monotonic() - self.runner_started >= RUNNER_HEALTHY:
            self.restart_delay = RUNNER_RESTART_MIN
        else:
            self.restart_delay = min(RUNNER_RESTART_MAX, max(RUNNER_RESTART_MIN, self.restart_delay * 2))
        self.restart_at = time.monotonic() + self.restart_delay
        self.logger.error("queue runner (pid %d) %s; starting a new one in %ds", pid, how, self.restart_delay)

    def tick(self):
        if self.restart_at is None:
            return None
        wait = self.restart_at - time.monotonic()
        if wait > 0:
            return wait
        self.restart_at = None
        self.start_runner()
        return None

    def stop_runner(self, *, wait):
        pid, self.runner_pid, self.restart_at = self.runner_pid, None, None
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
            if wait:
                os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass

    def reload(self):
        """SIGHUP: new configuration for new sessions, a new runner for the aliases.

        The listening addresses stay as they are until a restart."""
        old = self.cfg, self.tls, self.submission_ports, self.policies
        try:
            self.cfg = config.load(self.cfg.path)
            self._prepare()
        except (config.ConfigError, OSError, ValueError) as exc:
            self.cfg, self.tls, self.submission_ports, self.policies = old
            self.logger.error("reload failed, keeping the old configuration: %s", exc)
            return
        self.logger.info("configuration reloaded from %s", self.cfg.path)
        if self.runner_pid is not None or self.restart_at is not None:
            self.stop_runner(wait=False)
            self.start_runner()

    def run(self, *, with_runner=True, on_ready=None):
        if with_runner:
            self.start_runner()
        gc.freeze()         # the master's objects stay shared with the session children, not copied
        try:
            busy = f"421 4.7.0 {self.cfg.hostname} Too many connections, try again later\r\n".encode()
            listener.serve_forking(self.session, listeners=self.listeners(),
                                 max_children=self.cfg.smtp.max_children, logger=self.logger,
                                 on_ready=on_ready, busy_reply=busy,
                                 limits=connection.Limits.of(self.cfg.smtp, self.cfg.smtp.command_timeout),
                                 on_hup=self.reload, supervisor=self if with_runner else None,
                                 max_use=max(1, self.cfg.smtp.max_use))
        finally:
            self.stop_runner(wait=True)
        self.logger.info("stopped")
        return os.EX_OK


def _end_with(master):
    """Make this process (the runner) get SIGTERM when MASTER dies, so a killed
    daemon never leaves a runner behind to compete with its successor's."""
    import ctypes
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != master:          # it died before we asked
        os.kill(os.getpid(), signal.SIGTERM)


def serve(cfg, *, foreground):
    """`sendmail -bd` (detached) or `-bD` (foreground): run until SIGTERM."""
    logger = log.setup(cfg, "smtpd")
    try:
        daemon = Daemon(cfg, logger)
    except (OSError, ValueError) as exc:          # unreadable certificate, bad relay_networks
        raise Fatal(os.EX_CONFIG, f"[smtp]: {exc}") from None
    _check_listeners(daemon.listeners())
    if foreground:
        return daemon.run()
    return _detached(cfg, logger, daemon)


def _check_listeners(listeners):
    """Fail now, before detaching, with one line when an address cannot be bound (in use, no permission)."""
    for host, port, _ in listeners:
        if port != 0:
            listener.bind(host, port).close()


def _detached(cfg, logger, daemon):
    import daemon as python_daemon
    import daemon.pidfile as pidfile
    os.makedirs(cfg.mailsuite.state_dir, mode=0o755, exist_ok=True)
    pid_path = os.path.join(cfg.mailsuite.state_dir, "smtpd.pid")
    _remove_stale_pid_file(pid_path)
    keep = [h.socket.fileno() for h in logger.handlers if getattr(h, "socket", None) is not None]
    context = python_daemon.DaemonContext(pidfile=pidfile.TimeoutPIDLockFile(pid_path, acquire_timeout=1),
                                          files_preserve=keep, working_directory="/", umask=0o022,
                                          signal_map={})
    try:
        context.open()
    except lockfile.LockError:
        raise Fatal(os.EX_TEMPFAIL, f"already running (pid file {pid_path})") from None
    with context:
        return daemon.run()


def _remove_stale_pid_file(path):
    """A pid file left by a daemon that was killed would stop the next start."""
    try:
        with open(path) as f:
            pid = int(f.read().split()[0])
        os.kill(pid, 0)
    except (FileNotFoundError, IndexError):
        return
    except (ValueError, ProcessLookupError):
        os.unlink(path)
    except PermissionError:
        pass


def smtp_on_stdio(cfg, user, *, submit=None):
    """`sendmail -bs`: one SMTP session on stdin/stdout for local USER (a name or a User).

    When stdin is a network connection (inetd's `sendmail -bs` line), the
    client is a stranger, not USER: it gets the daemon's relay policy,
    strict line ends, AUTH and STARTTLS, and its limits.

    SUBMIT(sender, recipients, data_file, received) -> queue id stores the
    message; by default the queue itself (root or the sandbox), otherwise
    the caller passes its maildrop writer."""
    logger = log.setup(cfg, "smtpd")
    if submit is None:
        enqueue = queue_writer(cfg)
    else:
        def enqueue(envelope, data, received, queue_id):
            return submit(envelope.sender, envelope.recipients, data, received.encode(), queue_id)
    limits = connection.Limits.of(cfg.smtp, cfg.smtp.command_timeout)
    conn = connection.Connection.from_stdio(timeout=limits.line_timeout)
    if conn.peer is None:                 # a local program or terminal: the user who ran us
        policy = Policy.from_config(cfg, reject_bare_newlines=False, lf_line_ends=True, enforce_sync=False)
        who = {"local_user": getattr(user, "name", user)}
    else:                                 # inetd handed us a network client: it gets what the daemon gives one
        conn.start_login_phase(limits)
        policy = Policy.from_config(cfg)
        who = {"authenticate": authenticator(cfg, logger, conn),
               "tls_context": tls.tls_context_if_readable(cfg, "smtp", logger),
               "plaintext_ok": lambda c: auth.plaintext_allowed(cfg, c)}
    try:
        Session(conn, policy, enqueue=enqueue, logger=logger, known_recipient=recipient_check(cfg),
                **who, **_queue_errors()).run()
    except (connection.PeerGone, connection.SessionLimit):
        pass
    finally:
        conn.close()
    return os.EX_OK


def queue_writer(cfg):
    """enqueue(envelope, data_file, received, queue_id) -> queue id, through the durable queue."""
    def enqueue(envelope, data, received, queue_id):
        return queue.Queue(cfg).enqueue(envelope.sender, envelope.recipients, data,
                                        received=received.encode(), client=envelope.client,
                                        auth_user=envelope.auth_user, qid=queue_id, arrival=envelope.started)
    return enqueue


def recipient_check(cfg):
    """known_recipient(address) for RCPT, or None when unknown users are accepted."""
    if not cfg.smtp.reject_unknown_recipients:
        return None
    from ..recipients import LocalRecipients
    return LocalRecipients(cfg).known


def authenticator(cfg, logger, conn):
    """authenticate(user, password) -> user name or None, through the shared auth module.

    One per session: after `max_login_failures` failures the session ends with 421."""
    checker = auth.Authenticator(cfg, "smtp", logger)

    def authenticate(username, password):
        user = checker.authenticate(username, password, conn.peer)
        if user is None and checker.exhausted:
            raise Disconnect(R_TOO_MANY_AUTH_FAILURES)
        return user.name if user else None
    return authenticate


def _queue_errors():
    return {"queue_full": (queue.QueueFull,), "queue_errors": (queue.QueueError,)}
