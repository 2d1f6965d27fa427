"""Attacks through ~/.forward and :include: by one local user on root and on another user.

Every test here runs real users (useradd) against a system-mode MTA: the
attacker writes files in their own home and submits with the staged
sendmail; root's queue runner delivers.  What must hold (sendmail's and
Postfix local(8)'s rules): a .forward, and any :include: it names, is
opened by a process that has become the .forward's owner; an include file
must belong to that user or root; whatever it yields runs as the .forward's
owner; only root's aliases may include files of other owners; and no
bounce or log line quotes an included file beyond a short, clean excerpt.
"""

import os

import pytest

pytestmark = pytest.mark.root

SECRET_LINES = [f"rootsecret{n}:$6$salt$hash{n}:19000:0:99999:7:::" for n in range(20)]


def root_file(mta, name, text, mode=0o600):
    path = mta.dir / name
    path.write_text(text)
    os.chown(path, 0, 0)
    path.chmod(mode)
    return path


def everything_seen(mta, users, log):
    """All the bytes the attacker could get back: spools (their bounces) and the MTA's log."""
    return b"".join(mta.spool_bytes(u) for u in users) + log.encode()


def test_include_in_forward_cannot_read_a_root_only_file(system_mta, real_users):
    mta = system_mta
    a = real_users.add("secA")
    shadow = root_file(mta, "shadow", "\n".join(SECRET_LINES) + "\n")
    a.write(".forward", f"\\{a.name}\n:include:{shadow}\n")
    assert mta.sendmail(a, "-f", a.name, a.name).returncode == 0
    log = mta.run_queue()
    seen = everything_seen(mta, [a], log)
    assert b"rootsecret" not in seen
    assert b"$6$salt" not in seen
    subjects = [m["Subject"] for m in mta.messages(a)]
    assert "test" in subjects                    # the \secA copy still arrives
    assert mta.queue_entries("incoming") == mta.queue_entries("deferred") == []


def test_include_in_forward_cannot_read_another_users_private_file(system_mta, real_users):
    mta = system_mta
    a, b = real_users.add("secA"), real_users.add("secB")
    key = b.write(".ssh/id_ed25519", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAAsecretkey\n"
                  "-----END OPENSSH PRIVATE KEY-----\n", mode=0o600)
    (b.home / ".ssh").chmod(0o700)
    a.write(".forward", f":include:{key}\n")
    assert mta.sendmail(a, "-f", a.name, a.name).returncode == 0
    log = mta.run_queue()
    seen = everything_seen(mta, [a, b], log)
    assert b"secretkey" not in seen and b"PRIVATE KEY" not in seen


def test_forward_is_opened_as_its_user_not_through_roots_eyes(real_users):
    """A forward_file under a directory the user points (by symlink) at a root-only place."""
    from mta_system import SystemMta
    mta = SystemMta(queue={"forward_file": "~/.mail/forward"})
    try:
        a = real_users.add("secA")
        hidden = mta.dir / "rootonly"
        hidden.mkdir(mode=0o700)
        root_file(mta, "rootonly/forward", "\n".join(SECRET_LINES) + "\n", mode=0o644)
        os.symlink(hidden, a.home / ".mail")
        assert mta.sendmail(a, "-f", a.name, a.name).returncode == 0
        log = mta.run_queue()
        assert b"rootsecret" not in everything_seen(mta, [a], log)
        assert [m["Subject"] for m in mta.messages(a)] == ["test"]     # no usable forward: the mailbox
    finally:
        mta.close()


def test_include_of_a_victims_spool_runs_nothing_as_the_victim(system_mta, real_users):
    mta = system_mta
    a, b = real_users.add("secA"), real_users.add("secB")
    ran, wrote = mta.out / "ran", mta.out / "wrote"
    body = f"|id -u > {ran}\n{wrote}\n"
    assert mta.sendmail(a, b.name, input=f"Subject: bait\n\n{body}".encode()).returncode == 0
    mta.run_queue()
    assert body.encode() in mta.spool_bytes(b)
    a.write(".forward", f":include:{mta.spool(b)}\n")
    assert mta.sendmail(a, a.name).returncode == 0
    log = mta.run_queue()
    assert not ran.exists() and not wrote.exists()
    assert b"bait" not in everything_seen(mta, [a], log)


def test_include_of_another_users_readable_file_is_refused(system_mta, real_users):
    mta = system_mta
    a, b = real_users.add("secA"), real_users.add("secB")
    ran, wrote = mta.out / "ran", mta.out / "wrote"
    listing = b.write("list", f'"|id -u > {ran}"\n{wrote}\n', mode=0o644)
    a.write(".forward", f":include:{listing}\n")
    assert mta.sendmail(a, a.name).returncode == 0
    mta.run_queue()
    assert not ran.exists() and not wrote.exists()


def test_what_a_forward_includes_runs_as_the_forward_owner(system_mta, real_users):
    mta = system_mta
    a = real_users.add("secA")
    own, rooted = mta.out / "own", mta.out / "rooted"
    mine = a.write("mine", f'"|id -u > {own}"\n', mode=0o644)
    shared = root_file(mta, "shared-list", f'"|id -u > {rooted}"\n', mode=0o644)
    a.write(".forward", f"\\{a.name}\n:include:{mine}\n:include:{shared}\n")
    assert mta.sendmail(a, a.name).returncode == 0
    mta.run_queue()
    assert own.read_text().strip() == str(a.uid)
    assert rooted.read_text().strip() == str(a.uid)        # never root, never default_privs


def test_only_roots_aliases_include_files_of_other_owners(system_mta, real_users):
    mta = system_mta
    a, b = real_users.add("secA"), real_users.add("secB")
    ran = mta.out / "ran"
    listing = b.write("list", f'"|id -u > {ran}"\n', mode=0o644)
    mta.aliases.write_text(f"postmaster: root\nblist: :include:{listing}\n")
    assert mta.sendmail(a, "blist").returncode == 0
    mta.run_queue()
    assert ran.read_text().strip() == str(b.uid)            # root's alias: the file owner's rights
    ran.unlink()
    os.chown(mta.aliases, a.uid, a.gid)                       # an aliases file root does not own
    assert mta.sendmail(a, "blist").returncode == 0
    mta.run_queue()
    assert not ran.exists()


def test_bounces_quote_an_include_file_only_in_short_clean_excerpts(system_mta, real_users):
    mta = system_mta
    a = real_users.add("secA")
    lines = [f"nosuchuser{n}-" + "x" * 200 + "\x1b]0;title\x07" for n in range(30)]
    mine = a.write("mine", "\n".join(lines) + "\n", mode=0o644)
    a.write(".forward", f"\\{a.name}\n:include:{mine}\n")
    assert mta.sendmail(a, "-f", a.name, a.name).returncode == 0
    log = mta.run_queue()
    seen = everything_seen(mta, [a], log)
    assert b"\x1b" not in seen and b"\x07" not in seen
    assert b"x" * 100 not in seen
    assert seen.count(b"nosuchuser") < 30
    [bounce] = [m for m in mta.messages(a) if m["From"].startswith("MAILER-DAEMON")]
    assert "nosuchuser0" in bounce.as_string()


def test_command_output_reaches_bounces_only_as_a_short_clean_excerpt(system_mta, real_users):
    mta = system_mta
    a = real_users.add("secA")
    noisy = a.write("noisy", "#!/bin/sh\nprintf 'first\\033]0;t\\007'\nhead -c 300 /dev/zero | tr '\\000' y\n"
                    "printf '\\nsecond-line\\n'\nexit 67\n", mode=0o755)
    a.write(".forward", f"\\{a.name}\n|{noisy}\n")
    assert mta.sendmail(a, "-f", a.name, a.name).returncode == 0
    log = mta.run_queue()
    seen = everything_seen(mta, [a], log)
    assert b"first" in seen
    assert b"\x1b" not in seen and b"\x07" not in seen
    assert b"y" * 150 not in seen
    assert b"second-line" not in seen


def test_a_forward_that_crashed_the_worker_now_bounces_that_entry(system_mta, real_users):
    """A NUL in an :include: path used to raise in the worker before any record: retried for ever."""
    mta = system_mta
    a = real_users.add("secA")
    a.write(".forward", f"\\{a.name}\n:include:/tmp/a\0b\n")
    assert mta.sendmail(a, "-f", a.name, a.name).returncode == 0
    mta.run_queue()
    assert mta.queue_entries("incoming") == mta.queue_entries("deferred") == mta.queue_entries("active") == []
    subjects = [m["Subject"] for m in mta.messages(a)]
    assert "test" in subjects and "Undelivered Mail Returned to Sender" in subjects
