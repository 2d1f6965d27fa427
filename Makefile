# mailsuite — build, test and install.
PYTHON   ?= python3
VENV     ?= .venv
PREFIX   ?= /usr/local
DESTDIR  ?=
BINDIR   ?= $(PREFIX)/bin
LIBDIR   ?= $(PREFIX)/lib/mailsuite
INSTALL_PYTHON ?= /usr/bin/python3
MANDIR   ?= $(PREFIX)/share/man
EXAMPLES ?= $(PREFIX)/share/doc/mailsuite/examples
SANDBOX  ?= sandbox
PYTEST_ARGS ?=

VPY := $(VENV)/bin/python

.PHONY: all demo test bench install venv clean config-docs

all: venv

$(VPY):
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip

# mailq and newaliases are sendmail under other names, as on every MTA.
LINK_ALIASES = ln -sf sendmail $(VENV)/bin/mailq && ln -sf sendmail $(VENV)/bin/newaliases

venv: $(VPY)
	$(VPY) -m pip install -q -e '.[webmail]'
	$(LINK_ALIASES)

$(VENV)/.test-deps: $(VPY) setup.cfg $(wildcard bin/*)     # the venv holds copies of bin/
	$(VPY) -m pip install -q -e '.[test]'
	$(LINK_ALIASES)
	touch $@

demo: venv
	$(VENV)/bin/mailsuite up --dir $(SANDBOX)

test: $(VENV)/.test-deps
	$(VENV)/bin/pytest -n auto $(PYTEST_ARGS) tests

bench: $(VENV)/.test-deps
	$(VPY) -m compileall -q lib      # programs start byte-compiled, as after a real install
	$(VPY) tests/bench/run.py

# A system installation runs on the system's Python with its packaged
# dependencies (Debian: python3-pyinotify python3-daemon python3-dnspython),
# never on the interpreter that happens to be first in PATH: the package
# goes to a private directory and each program names both.  The programs
# start with -IS (-I -S): site's .pth files and sitecustomize cost a few ms per
# delivery, so the wrapper puts the system's site directories on sys.path
# itself, as site would (read from INSTALL_PYTHON at install time).
SITE_DIRS = $(shell $(INSTALL_PYTHON) -I -c 'import json, site; print(json.dumps(site.getsitepackages()))')

install:
	install -d '$(DESTDIR)$(LIBDIR)' '$(DESTDIR)$(BINDIR)'
	rm -rf '$(DESTDIR)$(LIBDIR)/mailsuite'
	cp -R lib/mailsuite '$(DESTDIR)$(LIBDIR)/'
	find '$(DESTDIR)$(LIBDIR)' -name __pycache__ -prune -exec rm -rf {} +
	$(INSTALL_PYTHON) -m compileall -q -d '$(LIBDIR)' '$(DESTDIR)$(LIBDIR)'
	for program in bin/*; do \
		target='$(DESTDIR)$(BINDIR)'/$${program#bin/}; \
		{ echo '#!$(INSTALL_PYTHON) -IS'; echo 'import sys; sys.path[:0] = ["$(LIBDIR)"]; sys.path += $(SITE_DIRS)'; \
		  tail -n +2 "$$program"; } > "$$target"; \
		chmod 0755 "$$target"; \
	done
	ln -sf sendmail '$(DESTDIR)$(BINDIR)/mailq'
	ln -sf sendmail '$(DESTDIR)$(BINDIR)/newaliases'
	install -d '$(DESTDIR)$(EXAMPLES)'
	cp -R etc/. '$(DESTDIR)$(EXAMPLES)/'
	grep -rl /usr/local/bin '$(DESTDIR)$(EXAMPLES)' | xargs sed -i 's|/usr/local/bin|$(BINDIR)|g'
	install -m 0644 docs/*.md '$(DESTDIR)$(EXAMPLES)/..'
	for page in man/*.[1-8]; do \
		sec=$${page##*.}; \
		install -d "$(DESTDIR)$(MANDIR)/man$$sec"; \
		install -m 0644 "$$page" "$(DESTDIR)$(MANDIR)/man$$sec/"; \
	done
	if [ -z '$(DESTDIR)' ] && [ "$$(id -u)" = 0 ]; then \
		install -d -m 2775 -o root -g mail /var/spool/mail; \
		install -d -m 0755 -o root -g root /var/spool/mailsuite /var/lib/mailsuite; \
		install -d -m 1733 -o root -g root /var/spool/mailsuite/maildrop; \
		install -d -m 0700 -o root -g root /var/spool/mailsuite/queue; \
		install -d -m 0755 /etc/mailsuite; \
		[ -e /etc/mailsuite/mailsuite.conf ] || install -m 0644 etc/mailsuite.conf /etc/mailsuite/; \
		[ -e /etc/aliases ] || install -m 0644 etc/aliases /etc/aliases; \
	fi

config-docs:                     # after adding a key to lib/mailsuite/core/config.py
	PYTHONPATH=lib $(PYTHON) -m mailsuite.core.config etc/mailsuite.conf man/mailsuite.conf.5

clean:
	rm -rf $(VENV) build lib/*.egg-info .pytest_cache
