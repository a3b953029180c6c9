"""The layering rules, pinned by reading every module's imports.

- the base layer (controlplane/lib) imports no app: it is what the apps share;
- producers never import consumers (the relay reuses the feed client in the base);
- the workers (producer worker, relay, consumer worker, feed client) talk to the hub
  over HTTP and WebSockets only: no model, however indirectly;
- the hub process never imports pandas (110 MB of RSS per process under pandas 3).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ("controlplane", "producers", "consumers")
WORKERS = (
    "producers.worker",
    "producers.relay",
    "consumers.worker",
    "controlplane.lib.feedclient",
)


@cache
def modules() -> dict[str, Path]:
    found = {}
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


@cache
def imports(module: str) -> frozenset[str]:
    """The project modules ``module`` imports, wherever the import statement is."""
    path = modules()[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1]
                    + ([base] if base else [])
                )
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(name for name in names if name in modules())


def reach(module: str) -> dict[str, str]:
    """Every project module ``module`` imports, directly or not: name -> importer."""
    seen, todo = {}, [module]
    while todo:
        current = todo.pop()
        for name in imports(current):
            if name not in seen and name != module:
                seen[name] = current
                todo.append(name)
    return seen


def chain(module: str, target: str, seen: dict[str, str]) -> str:
    links = [target]
    while links[-1] != module and links[-1] in seen:
        links.append(seen[links[-1]])
    return " <- ".join(links)


def under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_it_finds_the_modules_it_checks():
    assert {"controlplane.lib.wire", "producers.feed", *WORKERS} <= set(modules())


@pytest.mark.parametrize(
    "module", sorted(m for m in modules() if under(m, "controlplane.lib"))
)
def test_the_base_layer_imports_no_app(module):
    outside = sorted(
        name for name in imports(module) if not under(name, "controlplane.lib")
    )
    assert outside == [], f"{module} imports {outside}: move it out of the base"


@pytest.mark.parametrize(
    "module", sorted(m for m in modules() if under(m, "producers"))
)
def test_producers_import_no_consumers(module):
    found = reach(module)
    bad = sorted(name for name in found if under(name, "consumers"))
    assert not bad, [chain(module, name, found) for name in bad]


@pytest.mark.parametrize("worker", sorted(m for m in modules() if under(m, *WORKERS)))
def test_workers_import_no_models(worker):
    found = reach(worker)
    bad = sorted(
        name for name in found if name.endswith(".models") or ".models." in name
    )
    assert not bad, [chain(worker, name, found) for name in bad]


def test_the_hub_process_never_imports_pandas():
    code = (
        "import os, sys, django;"
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'controlplane.settings');"
        "django.setup();"
        "import controlplane.asgi, controlplane.urls;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pandas')[:3])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
