"""One message relayed through five real MTAs in network namespaces, then traced.

    swaks -> mailsuite (a) -> Exim (b, holds it) -> OpenSMTPD (c) -> Sendmail (d) -> Postfix (e) -> Dovecot LMTP (e)

Each host is a namespace on one bridge (netlan.py).  Exim, OpenSMTPD and
Sendmail conflict with Postfix as Debian packages, so they run from
tests/.mtas, unpacked by tests/fetch_mtas.sh (.ci/run calls it); the
system users they insist on and the spool paths compiled into them exist
only inside their namespaces (/etc/netns/ files, a tmpfs over /var/spool
and /var/lib), so the machine keeps its packages and its /etc.  Exim
queues the message and delivers it only when told, HOLD seconds later: the
trace of the delivered message must name that hop as the slowest, held by
Exim's host.  With MAILSUITE_TRACE_CORPUS=1 the delivered header is
written to tests/trace_corpus/relay.eml, the corpus the parser tests read.
Root only.
"""

import os
import shutil
import subprocess
import time
from pathlib import Path

import peers
import pytest
from netlan import Lan
from smtp_helpers import Dnsmasq, Instance, ThrowawayPostfix, wait_for

from mailsuite.trace import hops as trace
from mailsuite.trace import render as trace_render

pytestmark = [pytest.mark.root, peers.needs("ip", "swaks", "postfix", "dovecot-lmtp", "dnsmasq")]

SUBNET = "10.254.0"
HOSTS = {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}
NAMES = {"a": "mx.a.test", "b": "mx.b.test", "c": "mx.c.test", "d": "mx.d.test", "e": "mx.e.test"}
HOLD = 4
MTAS = Path(__file__).parent / ".mtas"
CORPUS = Path(__file__).parent / "trace_corpus" / "relay.eml"
EXTRA_USERS = ("Debian-exim", "opensmtpd", "opensmtpq", "smmsp")
EXIM_UID = 64000                                          # Debian-exim, the first of EXTRA_USERS


def require_unpacked():
    for binary in ("usr/sbin/exim4", "usr/sbin/smtpd", "usr/libexec/sendmail/sendmail", "usr/bin/m4"):
        if not os.access(MTAS / binary, os.X_OK):
            peers.missing(f"{binary} is not unpacked in tests/.mtas",
                          "exim4-daemon-light, opensmtpd and sendmail-bin (run tests/fetch_mtas.sh)")


def etc_overrides():
    """/etc/passwd and /etc/group with the foreign MTAs' system users."""
    passwd = Path("/etc/passwd").read_text()
    group = Path("/etc/group").read_text()
    for number, name in enumerate(EXTRA_USERS):
        passwd += f"{name}:x:{64000 + number}:{64000 + number}::/nonexistent:/usr/sbin/nologin\n"
        group += f"{name}:x:{64000 + number}:\n"
    return {"passwd": passwd, "group": group}


class Foreign:
    """A foreign daemon in the host's namespace, with the host's name (a UTS namespace) and private /var mounts."""

    def __init__(self, lan, host, directory, command, mounts=()):
        self.dir = directory
        self.log = open(directory / "daemon.log", "ab")
        setup = f"hostname {NAMES[host]} && " + "".join(f"mount -t tmpfs tmpfs {m} && " for m in mounts)
        env = f"LD_LIBRARY_PATH={MTAS}/usr/lib/x86_64-linux-gnu:{MTAS}/usr/lib"
        self.process = subprocess.Popen(["ip", "netns", "exec", lan.names[host], "unshare", "--uts", "sh", "-c",
                                         f"{setup}exec env {env} {command}"], stdout=self.log, stderr=self.log)

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def wait_port(lan, host, port=25, timeout=30):
    def listening():
        done = subprocess.run(["ip", "netns", "exec", lan.names[host], "ss", "-ltnH", f"sport = :{port}"],
                              capture_output=True, text=True)
        return bool(done.stdout.strip())
    try:
        wait_for(listening, timeout=timeout)
    except AssertionError:
        raise AssertionError(f"nothing listens on port {port} of {NAMES[host]}") from None


# --- the hosts -------------------------------------------------------------

def ours(lan, tmp_path):
    instance = Instance(tmp_path / "a", domain="a.test", mailsuite={"hostname": NAMES["a"]},
                        smtp={"listen": f"{SUBNET}.1:25", "relay_networks": f"127.0.0.0/8 {SUBNET}.0/24",
                              "static_routes": f"e.test={SUBNET}.2:25", "client_tls": "no"})
    instance.netns = lan.names["a"]
    instance.start(runner=True)
    return instance


EXIM_CONF = """\
primary_hostname = {name}
exim_user = Debian-exim
exim_group = Debian-exim
spool_directory = {dir}/spool
log_file_path = {dir}/log/%slog
pid_file_path = {dir}/exim.pid
local_interfaces = {address}
daemon_smtp_ports = 25
host_lookup =
rfc1413_hosts =
tls_advertise_hosts =
queue_only = true
acl_smtp_rcpt = acl_check_rcpt
trusted_users = root
begin acl
acl_check_rcpt:
  accept
begin routers
relay:
  driver = manualroute
  route_list = * {next}
  transport = remote_smtp
  self = send
begin transports
remote_smtp:
  driver = smtp
  port = 25
  hosts_avoid_tls = *
begin retry
* * F,1m,2s
"""


def exim(lan, tmp_path):
    directory = tmp_path / "b"
    for name in ("log", "spool"):                          # Exim writes them as its own user
        (directory / name).mkdir(parents=True)
        os.chown(directory / name, EXIM_UID, EXIM_UID)
    conf = directory / "exim.conf"
    conf.write_text(EXIM_CONF.format(name=NAMES["b"], dir=directory, address=f"{SUBNET}.2", next=f"{SUBNET}.3"))
    os.chmod(conf, 0o644)
    daemon = Foreign(lan, "b", directory, f"{MTAS}/usr/sbin/exim4 -C {conf} -bdf")
    daemon.run = lambda *args: subprocess.run(
        ["ip", "netns", "exec", lan.names["b"], "env", f"LD_LIBRARY_PATH={MTAS}/usr/lib/x86_64-linux-gnu",
         f"{MTAS}/usr/sbin/exim4", "-C", str(conf), *args], capture_output=True, text=True, timeout=60)
    return daemon


SMTPD_CONF = """\
listen on {address} port 25 hostname {name}
action "relay" relay host smtp://{next}:25
match from any for any action "relay"
"""


def opensmtpd(lan, tmp_path):
    directory = tmp_path / "c"
    directory.mkdir()
    conf = directory / "smtpd.conf"
    conf.write_text(SMTPD_CONF.format(address=f"{SUBNET}.3", name=NAMES["c"], next=f"{SUBNET}.4"))
    return Foreign(lan, "c", directory,
                   f"sh -c 'mkdir -p /var/lib/opensmtpd/empty && mkdir -m 0711 /var/spool/smtpd && "
                   f"exec {MTAS}/usr/sbin/smtpd -d -f {conf}'",
                   mounts=("/var/lib", "/var/spool", "/run"))


SENDMAIL_MC = """\
divert(-1)
divert(0)dnl
include(`{cf}/m4/cf.m4')dnl
VERSIONID(`mailsuite trace relay test')dnl
OSTYPE(`linux')dnl
define(`confDOMAIN_NAME', `{name}')dnl
define(`QUEUE_DIR', `{dir}/mqueue')dnl
define(`STATUS_FILE', `{dir}/statistics')dnl
define(`confPID_FILE', `{dir}/sendmail.pid')dnl
define(`ALIAS_FILE', `')dnl
define(`confCW_FILE', `-o {dir}/local-host-names')dnl
define(`confCT_FILE', `-o {dir}/trusted-users')dnl
define(`confHOST_STATUS_DIRECTORY', `')dnl
define(`confDONT_PROBE_INTERFACES', `True')dnl
define(`confTO_IDENT', `0s')dnl
define(`confDONT_BLAME_SENDMAIL', `GroupWritableDirPathSafe')dnl
define(`SMART_HOST', `[{next}]')dnl
FEATURE(`promiscuous_relay')dnl
FEATURE(`accept_unresolvable_domains')dnl
FEATURE(`nocanonify')dnl
DAEMON_OPTIONS(`Port=25, Addr={address}, Name=MTA')dnl
MAILER(`smtp')dnl
"""


def sendmail(lan, tmp_path):
    directory = tmp_path / "d"
    (directory / "mqueue").mkdir(parents=True)
    os.chmod(directory / "mqueue", 0o700)
    mc = directory / "sendmail.mc"
    mc.write_text(SENDMAIL_MC.format(cf=MTAS / "usr/share/sendmail/cf", name=NAMES["d"], dir=directory,
                                     next=f"{SUBNET}.5", address=f"{SUBNET}.4"))
    cf = subprocess.run([str(MTAS / "usr/bin/m4"), str(mc)], capture_output=True, text=True, check=True).stdout
    (directory / "sendmail.cf").write_text(cf)
    return Foreign(lan, "d", directory, f"{MTAS}/usr/libexec/sendmail/sendmail -C {directory}/sendmail.cf -bD -q5s")


DOVECOT_CONF = """\
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
hostname = {name}
protocols = lmtp
listen = 127.0.0.1
ssl = no
mail_location = maildir:{dir}/mail/%n
lmtp_rcpt_check_quota = no
passdb {{
  driver = static
  args = nopassword=y
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={dir}/mail/%n
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = 24
  }}
}}
"""


def dovecot_and_postfix(lan, tmp_path):
    directory = tmp_path / "e"
    (directory / "mail").mkdir(parents=True)
    os.chmod(directory / "mail", 0o1777)
    conf = directory / "dovecot.conf"
    conf.write_text(DOVECOT_CONF.format(dir=directory, name=NAMES["e"]))
    dovecot = Foreign(lan, "e", directory, f"/usr/sbin/dovecot -F -c {conf}")
    wait_port(lan, "e", 24)
    postfix = ThrowawayPostfix({
        "myhostname": NAMES["e"], "mynetworks": f"127.0.0.0/8 {SUBNET}.0/24",
        "virtual_mailbox_domains": "e.test", "virtual_transport": "lmtp:inet:127.0.0.1:24",
        "virtual_mailbox_maps": "inline:{ bob@e.test=bob }", "smtpd_client_restrictions": "",
    }, address=f"{SUBNET}.5", port=25, netns=lan.names["e"])
    return dovecot, postfix


# --- the test ---------------------------------------------------------------

@pytest.fixture
def hosts_dir():
    """Where the hosts keep their files: a directory every MTA's own user can traverse."""
    import tempfile
    directory = Path(tempfile.mkdtemp(prefix="mailsuite-relay-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def lan():
    peers.require_root("it creates network namespaces and runs MTAs as root")
    require_unpacked()
    try:
        network = Lan(HOSTS, SUBNET, etc=etc_overrides())
    except subprocess.CalledProcessError as exc:
        peers.unavailable("ip netns", exc.stderr.strip())
    network.started = []
    try:
        yield network
    finally:
        for thing in reversed(network.started):
            thing.stop()
        network.delete()


def delivered(directory):
    found = sorted((directory / "mail" / "bob").glob("**/new/*")) + sorted((directory / "mail" / "bob").glob("**/cur/*"))
    return found[0].read_bytes() if found else None


def logs(directory):
    """Every host's log, for a failure message."""
    out = []
    for path in sorted(directory.glob("*/*log*")) + sorted(directory.glob("*/log/*")):
        if path.is_file():
            out.append(f"== {path.relative_to(directory)}\n{path.read_text(errors='replace')[-3000:]}")
    return "\n".join(out)


def test_a_message_through_five_mtas_is_traced_and_the_held_hop_found(lan, hosts_dir):
    try:
        relay_and_trace(lan, hosts_dir)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{logs(hosts_dir)}") from None


def relay_and_trace(lan, tmp_path):
    started = lan.started
    # every name and address of the LAN answered at once, both ways (MTAs look up their clients)
    started.append(Dnsmasq(tmp_path, netns=lan.names["a"], address=f"{SUBNET}.1", port=53,
                           hosts=[(NAMES[h], f"{SUBNET}.{n}") for h, n in HOSTS.items()]))
    started.append(ours(lan, tmp_path))
    held = exim(lan, tmp_path)
    started.append(held)
    started.append(opensmtpd(lan, tmp_path))
    started.append(sendmail(lan, tmp_path))
    dovecot, postfix = dovecot_and_postfix(lan, tmp_path)
    started += [dovecot, postfix]
    for host in ("b", "c", "d"):
        wait_port(lan, host)
    done = subprocess.run(["ip", "netns", "exec", lan.names["a"], "swaks", "--server", f"{SUBNET}.1:25",
                           "--helo", "client.a.test", "--from", "alice@a.test", "--to", "bob@e.test",
                           "--header", "Subject: five hops"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    wait_for(lambda: held.run("-bpc").stdout.strip() == "1", timeout=60)          # Exim has it, and holds it
    time.sleep(HOLD)
    assert held.run("-qff").returncode == 0
    raw = wait_for(lambda: delivered(tmp_path / "e"), timeout=90)
    if os.environ.get("MAILSUITE_TRACE_CORPUS") == "1":
        CORPUS.write_bytes(trace.read_header(raw))
    result = trace.trace_message(raw)
    print(trace_render.text(result))
    assert [h.mta for h in result.hops] == ["mailsuite", "Exim", "OpenSMTPD", "Sendmail", "Postfix", "LMTP (Dovecot)"]
    assert [h.by_host for h in result.hops] == [NAMES[h] for h in "abcde"] + [NAMES["e"]]
    assert all(h.parsed and h.time for h in result.hops)
    slowest = result.slowest
    assert slowest.index == 3 and slowest.delay >= HOLD - 1
    assert result.holder(slowest) == NAMES["b"]
    assert f"the message waited at {NAMES['b']}" in trace_render.text(result)
