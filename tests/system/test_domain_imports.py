"""Each service's domain.py is plain Python: it imports no module of any service, its own adapters (stores,
senders, templates) included, not even from inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOMAINS = sorted(ROOT.glob("services/*/domain.py"))


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or anywhere below it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("domain", DOMAINS, ids=lambda p: p.parent.name)
def test_a_domain_module_imports_nothing_of_the_services(domain: Path) -> None:
    assert not {m for m in imported_modules(domain) if m == "services" or m.startswith("services.")}


def test_every_service_has_a_domain_module() -> None:
    assert {p.parent.name for p in DOMAINS} == {"alert_svc", "monitor_svc", "notify_svc"}
