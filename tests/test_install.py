"""make install honours PREFIX and DESTDIR: programs, man pages, examples, nothing outside DESTDIR."""

import os
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow
def test_staged_install(tmp_path):
    stage = tmp_path / "stage"
    done = subprocess.run(["make", "-C", str(REPO), "install", f"DESTDIR={stage}", "PREFIX=/usr",
                           f"PYTHON={sys.executable}"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    for program in os.listdir(REPO / "bin"):
        assert (stage / "usr" / "bin" / program).exists(), program
    for page in os.listdir(REPO / "man"):
        section = page.rsplit(".", 1)[1]
        assert (stage / "usr" / "share" / "man" / f"man{section}" / page).exists(), page
    assert (stage / "usr" / "share" / "doc" / "mailsuite" / "examples" / "mailsuite.conf").exists()
    assert (stage / "usr" / "share" / "doc" / "mailsuite" / "PRIVILEGES.md").exists()
