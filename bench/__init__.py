"""Benchmarks (`make bench`): each writes flat JSON figures to bench/results/<name>.json."""

import json
from pathlib import Path
from typing import Any


def write_figures(path: Path, figures: dict[str, Any]) -> None:
    """Write ``figures`` to ``path`` (bench/results/<name>.json) and print them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(figures, indent=2)
    path.write_text(text + "\n")
    print(text)


def merge_figures(path: Path, figures: dict[str, Any]) -> None:
    """Write ``figures`` into ``path``, keeping the keys other runs of the benchmark wrote there."""
    existing: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    existing.update(figures)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(existing, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
