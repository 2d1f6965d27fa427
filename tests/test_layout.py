"""The package layout is the architecture: arrows point down only, and nothing imports in a circle.

Each package of lib/mailsuite/ may import only the packages below it
(`LAYERS`, the same picture as the README's architecture section); a
module's imports, lazy ones inside functions included, are read from its
source.  Every module must also import on its own in a fresh interpreter,
which is where an import cycle shows as an error.
"""

import ast
import re
import subprocess
import sys

from conftest import REPO

LIB = REPO / "lib"

# package -> the packages it may import (besides itself and the standard library)
LAYERS = {
    "core": set(),
    "store": {"core"},
    "server": {"core"},
    "trace": {"core"},
    "lda": {"store", "server", "core"},
    "mta": {"lda", "store", "server", "core"},
    "pop3": {"server", "store", "core"},
    "imap": {"server", "store", "core"},
    "mail": {"store", "trace", "core"},
    "webmail": {"trace", "core"},
    "admin": {"mta", "lda", "store", "server", "trace", "core"},
}


def modules():
    """{dotted name: path} of every module of the package."""
    found = {}
    for path in sorted((LIB / "mailsuite").rglob("*.py")):
        parts = list(path.relative_to(LIB).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name, path, known):
    """The mailsuite modules NAME imports, anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.add(target if target in known else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in known and m != name}


def graph():
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def layer(module):
    """The package of mailsuite.PACKAGE[.module...]."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_module_belongs_to_a_package():
    assert sorted(p.name for p in (LIB / "mailsuite").glob("*.py")) == ["__init__.py"]


def test_the_readme_shows_these_layers():
    """The README's architecture section is this table, and its package list names every package."""
    readme = (REPO / "README.md").read_text()
    block = readme[readme.index("<!-- layers: tests/test_layout.py -->"):].split("\n\n", 1)[0]
    shown = {}
    for line in block.splitlines()[1:]:
        package, _, below = line.strip().partition("->")
        shown[package.strip()] = set(below.split())
    assert shown == LAYERS
    listed = set(re.findall(r"^\| `([a-z0-9/]+)/`(?:, `([a-z0-9/]+)/`)?", readme, re.M))
    listed = {name for pair in listed for name in pair if name}
    on_disk = {str(p.parent.relative_to(LIB / "mailsuite")) for p in (LIB / "mailsuite").glob("*/__init__.py")}
    on_disk |= {str(p.parent.relative_to(LIB / "mailsuite")) for p in (LIB / "mailsuite").glob("*/*/__init__.py")}
    assert listed == on_disk - {"mail/commands"}


def test_every_package_is_in_the_layer_table():
    packages = {layer(m) for m in modules()} - {None}
    assert packages == set(LAYERS)


def test_arrows_point_down_only():
    upward = []
    for module, targets in graph().items():
        here = layer(module)
        for target in targets:
            there = layer(target)
            if there is not None and there != here and there not in LAYERS[here]:
                upward.append(f"{module} -> {target}")
    assert upward == []


def test_no_import_cycles():
    edges = graph()
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):                      # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for node in edges:
        if node not in index:
            visit(node)
    assert cycles == []


def test_every_module_imports_alone_in_a_fresh_interpreter():
    script = ("import importlib, sys\n"
              "failed = []\n"
              "for name in sys.argv[1:]:\n"
              "    try:\n"
              "        importlib.import_module(name)\n"
              "    except Exception as exc:\n"
              "        failed.append(f'{name}: {exc!r}')\n"
              "print('\\n'.join(failed))\n")
    failed = []
    for name in modules():                      # one interpreter per module: nothing is imported for it
        done = subprocess.run([sys.executable, "-c", script, name], capture_output=True, text=True, timeout=60,
                              env={"PYTHONPATH": str(LIB), "PATH": "/usr/bin:/bin"})
        if done.returncode or done.stdout.strip():
            failed.append(done.stdout.strip() or done.stderr.strip().splitlines()[-1])
    assert failed == []
