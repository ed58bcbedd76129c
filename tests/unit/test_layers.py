"""The layering of docs/architecture.md, measured from the code's imports: each package of ketch/
imports only the packages this table allows (a new arrow is a decision: change the doc and this
table together)."""

import ast
import os

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "ketch")
SHARED = {"errors", "_json", "detachkeys", "events", "units", "space", "logrus"}

ALLOWED = {
    "linux": set(),
    "oci": set(),
    "events": set(),
    "monitor": set(),
    "network": {"linux"},
    "volumes": {"archive", "linux"},
    "runtime": {"linux"},
    "content": {"oci"},
    "registry": {"oci"},
    "archive": {"linux"},
    "snapshots": {"archive", "linux", "oci"},
    "images": {"archive", "content", "linux", "oci", "registry", "snapshots"},
    "engine": {"archive", "build", "images", "monitor", "network", "oci", "runtime", "volumes"},
    "build": set(),
    "api": {"engine"},
    "daemon": {"api", "engine", "network", "registry"},
    "client": set(),
    "cli": {"client", "images", "archive", "oci", "build"},
}


def _imports():
    found: dict[str, set[str]] = {}
    for dirpath, _dirs, files in os.walk(ROOT):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, ROOT).split(os.sep)
            layer = rel[0].removesuffix(".py")
            with open(path) as f:
                tree = ast.parse(f.read(), path)
            for node in ast.walk(tree):
                mods = []
                if isinstance(node, ast.Import):
                    mods = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    mods = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                for m in mods:
                    parts = m.split(".")
                    if parts[0] != "ketch" or len(parts) < 2:
                        continue
                    target = parts[1]
                    if target != layer and (os.path.isdir(os.path.join(ROOT, target))
                                            or os.path.exists(os.path.join(ROOT, target + ".py"))):
                        found.setdefault(layer, set()).add(target)
    return found


def test_every_package_imports_only_the_layers_below_it():
    wrong = {}
    for layer, targets in _imports().items():
        if layer in SHARED - {"events"} or layer == "__init__":
            continue
        extra = targets - ALLOWED.get(layer, set()) - SHARED
        if extra:
            wrong[layer] = sorted(extra)
    assert wrong == {}


def test_the_table_names_every_package():
    packages = {n for n in os.listdir(ROOT) if os.path.isdir(os.path.join(ROOT, n)) and not n.startswith("__")}
    assert packages <= set(ALLOWED)
