"""A LAN of network namespaces for tests: hosts on one bridge, each with its own /etc overrides.

`Lan({"a": 1, "b": 2}, "10.253.0")` makes a switch namespace with a
bridge and one namespace per host at SUBNET.N/24, loopback up.  Files in
/etc/netns/NAME/ are bind-mounted over /etc by `ip netns exec` (resolv.conf
always; `etc={"passwd": text}` adds others, e.g. the system users a
foreign MTA insists on, without touching the machine's own /etc).
Everything is deleted by `delete()`.  Root only.
"""

import os
import shutil
import subprocess


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


class Lan:
    """Namespaces joined by a bridge in a switch namespace; deleted afterwards."""

    def __init__(self, hosts, subnet, *, etc=None):
        tag = f"ms{os.getpid() % 100000}{subnet.split('.')[1][-1]}"
        self.subnet = subnet
        self.switch = f"{tag}-sw"
        self.names = {host: f"{tag}-{host}" for host in hosts}
        self.created = []
        _ip("netns", "add", self.switch)
        self.created.append(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for host, number in hosts.items():
            ns = self.names[host]
            _ip("netns", "add", ns)
            self.created.append(ns)
            directory = f"/etc/netns/{ns}"              # ip netns exec mounts these files over /etc
            os.makedirs(directory, exist_ok=True)
            with open(f"{directory}/resolv.conf", "w") as f:
                f.write(f"nameserver {subnet}.1\n")
            for name, text in (etc or {}).items():
                with open(f"{directory}/{name}", "w") as f:
                    f.write(text)
            inside, outside = f"{tag}h{number}", f"{tag}s{number}"
            _ip("link", "add", inside, "type", "veth", "peer", "name", outside)
            _ip("link", "set", inside, "netns", ns)
            _ip("link", "set", outside, "netns", self.switch)
            _ip("-n", ns, "link", "set", inside, "name", "eth0")
            _ip("-n", ns, "addr", "add", f"{subnet}.{number}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", self.switch, "link", "set", outside, "master", "br0")
            _ip("-n", self.switch, "link", "set", outside, "up")

    def delete(self):
        for ns in reversed(self.created):
            _ip("netns", "del", ns, check=False)
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)
