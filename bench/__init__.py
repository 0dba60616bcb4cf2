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
