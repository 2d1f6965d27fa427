"""The configuration file: defaults, errors that name file/line/key, the example file."""

import os
from pathlib import Path

import pytest

from mailsuite.core import config
from mailsuite.core.config import ConfigError

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path, text, name="mailsuite.conf"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_missing_system_file_means_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv(config.ENV_VAR, raising=False)
    monkeypatch.setattr(config, "DEFAULT_PATH", str(tmp_path / "absent.conf"))
    cfg = config.load()
    assert cfg.mailsuite.spool_dir == "/var/spool/mail"
    assert cfg.mailsuite.lock_timeout == 60
    assert cfg.delivery.max_message_size == 50 << 20


@pytest.mark.parametrize("how", ["-C", "environment"])
def test_a_named_file_that_is_missing_is_an_error_in_every_program(how, tmp_path):
    """Falling back to the defaults would act on the system's spool and queue (sendmail -bp listed it)."""
    import subprocess

    from conftest import program
    absent = str(tmp_path / "absent.conf")
    for name, args in (("mail", ["-H"]), ("mail.local", ["alice"]), ("sendmail", ["-bp"]),
                       ("mailsuite", ["check"]), ("pop3d", []), ("imapd", [])):
        if how == "-C":
            argv, env = [program(name), "-C", absent, *args], None
        else:
            argv, env = [program(name), *args], dict(os.environ, MAILSUITE_CONFIG=absent)
        done = subprocess.run(argv, input=b"", capture_output=True, env=env, timeout=30)
        assert done.returncode == os.EX_CONFIG, (name, done)
        assert done.stderr.decode() == f"{name}: {absent}: no such file\n", name


def test_values_are_typed(tmp_path):
    cfg = config.load(write(tmp_path, "[mailsuite]\nlock_timeout = 2m\nsandbox = yes\n"
                                      "local_domains = a.example, b.example c.example\n"
                                      "[delivery]\nmax_message_size = 10k\n"))
    assert cfg.mailsuite.lock_timeout == 120
    assert cfg.mailsuite.sandbox is True
    assert cfg.mailsuite.local_domains == ("a.example", "b.example", "c.example")
    assert cfg.delivery.max_message_size == 10240


def test_unknown_key_names_file_line_and_key(tmp_path):
    path = write(tmp_path, "[mailsuite]\nspool_dir = /x\n\nspool_dri = /y\n")
    with pytest.raises(ConfigError, match=rf"^{path}:4: unknown key 'spool_dri' in \[mailsuite\]$"):
        config.load(path)


def test_unknown_section(tmp_path):
    path = write(tmp_path, "[mailsuite]\n[nonsense]\nx = 1\n")
    with pytest.raises(ConfigError, match=r":2: unknown section \[nonsense\]"):
        config.load(path)


@pytest.mark.parametrize("text, seconds", [("5d", 432000), ("1h30m", 5400), ("90", 90), ("0.5s", 0.5),
                                           ("250ms", 0.25)])
def test_durations(text, seconds):
    assert config.parse_duration(text) == seconds


def test_bad_value_names_key(tmp_path):
    path = write(tmp_path, "[mailsuite]\nlock_timeout = soon\n")
    with pytest.raises(ConfigError, match=r":2: mailsuite.lock_timeout: not a duration"):
        config.load(path)


@pytest.mark.parametrize("text, line", [("spool_dir = /x\n", 1), ("[mailsuite]\nthis is not ini\n", 2),
                                        ("[mailsuite]\nhostname = a\nhostname = b\n", 3)])
def test_malformed_file(tmp_path, text, line):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=rf"^{path}:{line}: "):
        config.load(path)


def test_environment_variable_names_the_file(tmp_path, monkeypatch):
    path = write(tmp_path, "[mailsuite]\nhostname = mx.example\n")
    monkeypatch.setenv("MAILSUITE_CONFIG", path)
    assert config.load().hostname == "mx.example"
    other = write(tmp_path, "[mailsuite]\nhostname = other.example\n", name="other.conf")
    assert config.load(other).hostname == "other.example"          # -C wins over the environment


def test_example_file_lists_every_key_with_its_default():
    assert (REPO / "etc" / "mailsuite.conf").read_text() == config.example_text() + "\n"
    cfg = config.load(str(REPO / "etc" / "mailsuite.conf"))
    assert cfg.mailsuite.spool_dir == "/var/spool/mail"


def test_programs_exit_ex_config_with_one_line(sandbox, tmp_path):
    bad = write(tmp_path, "[mailsuite]\nbogus = 1\n")
    done = sandbox.run("mail.local", "alice", input=b"Subject: x\n\nhi\n", env=dict(os.environ))
    assert done.returncode == 0
    import subprocess

    from conftest import program
    done = subprocess.run([program("mail.local"), "-C", bad, "alice"], input=b"x\n", capture_output=True)
    assert done.returncode == os.EX_CONFIG
    assert done.stderr.decode().count("\n") == 1
    assert "unknown key 'bogus'" in done.stderr.decode()


def test_manual_page_documents_every_key():
    page = (REPO / "man" / "mailsuite.conf.5").read_text()
    begin = page.index(".\\\" BEGIN KEYS")
    generated = page[page.index("\n", begin) + 1:page.index(".\\\" END KEYS")]
    assert generated == config.manual_keys() + "\n", "regenerate with: make config-docs"


def test_make_config_docs_writes_what_the_tests_expect(tmp_path):
    """`make config-docs` is how a contributor regenerates both files: its recipe must run."""
    import shutil
    import subprocess
    import sys
    shutil.copy(REPO / "man" / "mailsuite.conf.5", tmp_path / "page.5")
    recipe = subprocess.run(["make", "-n", "-s", "config-docs", f"PYTHON={sys.executable}"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.strip()
    recipe = recipe.replace("etc/mailsuite.conf", str(tmp_path / "example.conf"))
    recipe = recipe.replace("man/mailsuite.conf.5", str(tmp_path / "page.5"))
    subprocess.run(recipe, shell=True, cwd=REPO, check=True)
    assert (tmp_path / "example.conf").read_text() == (REPO / "etc" / "mailsuite.conf").read_text()
    assert (tmp_path / "page.5").read_text() == (REPO / "man" / "mailsuite.conf.5").read_text()


def test_every_program_has_a_manual_page():
    for program in (REPO / "bin").iterdir():
        assert list((REPO / "man").glob(program.name + ".[1-8]")), program.name
