# mailsuite — build, test and install.
PYTHON   ?= python3
VENV     ?= .venv
PREFIX   ?= /usr/local
DESTDIR  ?=
SBINDIR  ?= $(PREFIX)/sbin
BINDIR   ?= $(PREFIX)/bin
MANDIR   ?= $(PREFIX)/share/man
EXAMPLES ?= $(PREFIX)/share/doc/mailsuite/examples
SANDBOX  ?= sandbox
PYTEST_ARGS ?=

VPY := $(VENV)/bin/python

.PHONY: all demo test bench install venv clean

all: venv

$(VPY):
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip

venv: $(VPY)
	$(VPY) -m pip install -q -e .

$(VENV)/.test-deps: $(VPY) setup.cfg
	$(VPY) -m pip install -q -e '.[test]'
	touch $@

demo: venv
	$(VENV)/bin/mailsuite up --dir $(SANDBOX)

test: $(VENV)/.test-deps
	$(VENV)/bin/pytest -n auto $(PYTEST_ARGS) tests

bench: $(VENV)/.test-deps
	$(VPY) -m compileall -q lib      # programs start byte-compiled, as after a real install
	$(VPY) tests/bench/run.py

install:
	$(PYTHON) -m pip install --no-deps --ignore-installed --root '$(or $(DESTDIR),/)' --prefix '$(PREFIX)' .
	ln -sf sendmail '$(DESTDIR)$(PREFIX)/bin/mailq'
	ln -sf sendmail '$(DESTDIR)$(PREFIX)/bin/newaliases'
	install -d '$(DESTDIR)$(EXAMPLES)'
	cp -R etc/. '$(DESTDIR)$(EXAMPLES)/'
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

clean:
	rm -rf $(VENV) build lib/*.egg-info .pytest_cache
