"""Wheel build hook. This directory is the `mcp_adapter` package itself, and the generated stubs it imports
(`monitors.v1`) live outside it in ../gen/monitors: the wheel gets ./**/*.py under mcp_adapter/ and
../gen/monitors as the top-level `monitors` package, so the installed adapter imports what it does in the
repository."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface  # type: ignore[import-not-found]


def files(directory: Path, patterns: tuple[str, ...]) -> list[Path]:
    return sorted(
        path
        for pattern in patterns
        for path in directory.rglob(pattern)
        if path.is_file() and "__pycache__" not in path.parts
    )


class CustomBuildHook(BuildHookInterface):  # type: ignore[misc]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        package = Path(self.root).resolve()
        generated = package.parent / "gen" / "monitors"
        if not generated.is_dir():
            raise FileNotFoundError(f"{generated} is missing: build from the repository (`make protos` makes it)")
        for path in files(package, ("*.py",)):
            if path.name != "hatch_build.py" and "build" not in path.relative_to(package).parts[:1]:
                build_data["force_include"][str(path)] = f"mcp_adapter/{path.relative_to(package).as_posix()}"
        for path in files(generated, ("*.py", "*.pyi")):
            build_data["force_include"][str(path)] = f"monitors/{path.relative_to(generated).as_posix()}"
