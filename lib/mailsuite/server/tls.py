"""The server side of TLS: one context from [tls] (or a protocol's own certificate),
for STARTTLS/STLS and implicit TLS alike."""

import os

from ..core.config import ConfigError


def tls_context(cfg, section=None):
    """The server TLS context from [tls] cert_file/key_file, or None when TLS is not configured.

    A protocol section may override both with its own `tls_cert_file` and
    `tls_key_file` (one certificate per service name).
    """
    own = getattr(cfg, section, None) if section else None
    cert = getattr(own, "tls_cert_file", "") or cfg.tls.cert_file
    key = getattr(own, "tls_key_file", "") or cfg.tls.key_file or cert
    if not cert:
        return None
    import ssl  # only where TLS is configured
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = getattr(ssl.TLSVersion, cfg.tls.min_version.replace(".", "_"))
    if cfg.tls.ciphers:
        context.set_ciphers(cfg.tls.ciphers)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"[tls] cannot load {cert} / {key}: {getattr(exc, 'strerror', None) or exc}") from None
    return context


def tls_context_if_readable(cfg, section, logger):
    """tls_context(), or None with a warning when the key or certificate exists but
    this process may not read it: a user running a daemon of their own (sendmail
    -bd) serves without STARTTLS instead of failing over root's key."""
    own = getattr(cfg, section, None)
    cert = getattr(own, "tls_cert_file", "") or cfg.tls.cert_file
    key = getattr(own, "tls_key_file", "") or cfg.tls.key_file or cert
    for path in dict.fromkeys(p for p in (cert, key) if p):
        if os.path.exists(path) and not os.access(path, os.R_OK):
            logger.warning("[tls] %s: not readable by uid %d: STARTTLS is not offered", path, os.geteuid())
            return None
    return tls_context(cfg, section)
