"""mail against s-nail on a big spool: `-H` start-up, and read-one-then-quit.

    .venv/bin/python tests/bench/bench_mail.py        (or: make bench; BENCH_SCALE scales it)

Builds a sandbox with 10,000 messages of a few kB in
alice's spool, then times, best of 3 runs each (the index cache is warm
after the first `mail` run; the first is reported separately):
  - `mail -H` vs `s-nail -:/ -H -f SPOOL` (summary of every message)
  - `mail` / `s-nail -f`: print message 1, quit (one message moved to ~/mbox, the spool rewritten),
    on a fresh spool and on one whose messages already carry UIDs
Not run by the test suite; prints one line per measurement.
"""

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from common import BIN, have, sandbox, scaled  # puts lib/ on sys.path

from mailsuite.core import config  # noqa: E402
from mailsuite.store.mailbox import Mailbox  # noqa: E402


def build_spool(path, count, cfg):
    """COUNT messages appended through the store, as mail.local writes them (padded store headers)."""
    body = "Lorem ipsum dolor sit amet, consectetur adipiscing elit.\n" * 40
    store = Mailbox(str(path), cfg)
    store.create()
    real_fsync, os.fsync = os.fsync, lambda fd: None          # building the fixture only
    try:
        with store, store.locked():
            for n in range(1, count + 1):
                store.append((f"From: Bob <bob@localhost>\nTo: alice@localhost\nSubject: message {n}\n"
                              f"Date: Tue, 24 Nov 2026 07:00:00 +0000\nMessage-ID: <{n}@bench>\n\n{body}").encode(),
                             sender="bob@localhost")
    finally:
        os.fsync = real_fsync


def timed(argv, *, input=b"", env=None, before=None):
    if before:
        before()
    started = time.perf_counter()
    done = subprocess.run(argv, input=input, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{argv[0]} failed: {done.stderr.decode()}")
    return elapsed


def best(argv, runs=3, **kw):
    return min(timed(argv, **kw) for _ in range(runs))


def main():
    count = scaled(10000)
    root = Path(tempfile.mkdtemp(prefix="mailbench."))
    try:
        conf = sandbox(str(root / "sb"))
        spool = root / "sb" / "spool" / "alice"
        home = root / "sb" / "home" / "alice"
        pristine = root / "pristine"
        build_spool(pristine, count, config.load(conf))
        shutil.copyfile(pristine, spool)
        env = dict(os.environ, HOME=str(home), MAILSUITE_CONFIG=conf, LC_ALL="C.UTF-8", PAGER="cat")
        size_mb = spool.stat().st_size / 1e6
        print(f"spool: {count} messages, {size_mb:.1f} MB")
        mail = [str(BIN / "mail"), "-C", conf, "-u", "alice"]
        snail = ["s-nail", "-:/"]

        first = timed(mail + ["-H"], env=env)
        print(f"mail -H          first run (cold index cache): {first:.3f} s")
        print(f"mail -H          warm, best of 3:              {best(mail + ['-H'], env=env):.3f} s")
        if have("s-nail"):
            print(f"s-nail -H -f     best of 3:                    {best(snail + ['-H', '-f', str(spool)], env=env):.3f} s")

        def reset():
            shutil.copyfile(pristine, spool)
            (home / "mbox").unlink(missing_ok=True)

        script = b"p 1\nq\n"
        print(f"mail: p 1, q     best of 3:                    "
              f"{best(mail + ['-N'], input=script, env=env, before=reset):.3f} s")
        if have("s-nail"):
            snail_env = dict(env, MAIL=str(spool))
            print(f"s-nail: p 1, q   best of 3:                    "
                  f"{best(snail + ['-N', '-f', '%'], input=script, env=snail_env, before=reset):.3f} s")

        # Steady state: a spool mail has quit before (UIDs given out, every message seen).
        reset()
        timed(mail + ["-N"], input=b"q\n", env=env)
        shutil.copyfile(spool, pristine)
        print(f"mail: p 1, q     UIDs already assigned:        "
              f"{best(mail + ['-N'], input=script, env=env, before=reset):.3f} s")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
