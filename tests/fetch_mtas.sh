#!/bin/sh
# Unpack Exim, OpenSMTPD and Sendmail (and the libraries they need that
# Postfix's machine lacks) into tests/.mtas, without installing them: as
# packages they conflict with Postfix, which the other tests need.  The
# hop-trace relay test (tests/test_trace_relay.py) runs them from there,
# each in a network namespace of its own.  Idempotent; needs apt-get.
set -eu
cd "$(dirname "$0")"
target=.mtas
[ -x "$target/usr/sbin/exim4" ] && [ -x "$target/usr/sbin/smtpd" ] && [ -x "$target/usr/libexec/sendmail/sendmail" ] && exit 0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 0755 "$work"          # apt-get download hands the files to _apt
( cd "$work" && apt-get download -q \
    exim4-daemon-light exim4-base opensmtpd sendmail-bin sendmail-cf m4 \
    libgnutls-dane0 libidn12 libevent-2.1-7 liblockfile1 libwrap0 libldap-2.5-0 libsasl2-2 libdb5.3 >/dev/null )
mkdir -p "$target"
for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$target"; done
