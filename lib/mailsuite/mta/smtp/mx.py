"""Where mail for a domain goes: MX records, the way RFC 5321 section 5 says.

`route(cfg, domain)` answers with the list of hosts to try, best first:
MX records in preference order with equal preferences shuffled (so load
spreads over peers), the domain itself when it has no MX but has an
address (the implicit MX), and a permanent failure for a null MX (RFC
7505, `MX 0 .`) or a domain that does not exist.  Hosts that are us, and
every host less preferred than us, are dropped: relaying to them would loop.

Tests and closed networks point the resolver elsewhere with `[smtp]
dns_server` / `dns_port`, or bypass DNS for some domains with
`[smtp] static_routes` (`domain=host:port` items, like Postfix's transport map).
"""

import random
import socket
from dataclasses import dataclass, field

import dns.exception
import dns.resolver

from ...core import hostport


class RouteError(Exception):
    """No way to reach a domain; `permanent` says whether to bounce or defer."""

    def __init__(self, dsn, message, *, permanent):
        super().__init__(message)
        self.dsn = dsn
        self.permanent = permanent


@dataclass
class Host:
    """One place to connect to: a name, its preference, its addresses."""

    name: str
    preference: int
    port: int
    addresses: list = field(default_factory=list)


def make_resolver(cfg):
    """The system resolver, or the configured test/closed-network one."""
    if cfg.smtp.dns_server:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [cfg.smtp.dns_server]
        resolver.port = cfg.smtp.dns_port
    else:
        resolver = dns.resolver.Resolver()
    resolver.lifetime = cfg.smtp.dns_timeout
    return resolver


def static_route(cfg, domain):
    """The `static_routes` entry for DOMAIN as a Host, or None."""
    for item in cfg.smtp.static_routes:
        name, _, target = item.partition("=")
        if name.lower() == domain.lower():
            return parse_hostport(target, cfg.smtp.remote_port, "[smtp] static_routes")
    return None


def parse_hostport(text, default_port, key):
    """'[mx.example]:587', 'host:2525', 'host' or '127.0.0.1' as a Host; a bad one defers the mail."""
    try:
        name, port = hostport.parse(text, default_port, key=key)
    except hostport.HostPortError as exc:
        raise RouteError("4.3.5", str(exc), permanent=False) from None
    return Host(name=name, preference=0, port=port)


def route(cfg, domain, *, resolver=None, ourselves=()):
    """Hosts to try for DOMAIN, best first, each with its addresses resolved.

    OURSELVES is the set of names and addresses that mean this host.
    Raises RouteError when the domain cannot be reached."""
    resolver = resolver or make_resolver(cfg)
    hosts = mx_hosts(resolver, domain, cfg.smtp.remote_port)
    for host in hosts:
        host.addresses = addresses(resolver, host.name)
    return drop_ourselves(hosts, domain, {n.lower().rstrip(".") for n in ourselves})


def mx_hosts(resolver, domain, port):
    """The MX list of DOMAIN (preference order, ties shuffled), or its implicit MX."""
    try:
        answer = resolver.resolve(domain, "MX")
    except dns.resolver.NXDOMAIN:
        raise RouteError("5.1.2", f"domain {domain} does not exist", permanent=True) from None
    except dns.resolver.NoAnswer:
        return [Host(name=domain, preference=0, port=port)]
    except (dns.resolver.NoNameservers, dns.exception.Timeout) as exc:
        raise RouteError("4.4.3", f"DNS lookup of {domain} MX failed: {exc}", permanent=False) from None
    records = [(r.preference, r.exchange.to_text(omit_final_dot=True)) for r in answer]
    if any(name in ("", ".") for _, name in records):
        raise RouteError("5.1.10", f"domain {domain} accepts no mail (null MX)", permanent=True)
    random.shuffle(records)
    records.sort(key=lambda record: record[0])
    return [Host(name=name, preference=pref, port=port) for pref, name in records]


def addresses(resolver, name):
    """IPv4 then IPv6 addresses of an MX host; literal addresses pass through."""
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in name else socket.AF_INET, name)
        return [name]
    except OSError:
        pass
    found = []
    for rdtype in ("A", "AAAA"):
        try:
            found.extend(r.to_text() for r in resolver.resolve(name, rdtype))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers,
                dns.exception.Timeout):
            continue
    return found


def drop_ourselves(hosts, domain, ourselves):
    """Keep only hosts more preferred than the best entry that is us."""
    own = [h.preference for h in hosts
           if h.name.lower() in ourselves or any(a in ourselves for a in h.addresses)]
    if own:
        hosts = [h for h in hosts if h.preference < min(own)]
        if not hosts:
            raise RouteError("5.4.6", f"mail for {domain} loops back to myself", permanent=True)
    if not any(h.addresses for h in hosts):
        raise RouteError("4.4.4", f"no address for any MX host of {domain}", permanent=False)
    return hosts
