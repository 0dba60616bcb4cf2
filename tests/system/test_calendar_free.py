"""No test names a fixed date near the present.

A fixed date a few weeks old passes while it is inside every retention window, certificate validity and
expiry the code under test applies, then fails for everybody once the calendar moves on (the contract tests
wrote at a fixed day that InfluxDB's 30-day raw retention dropped a month later). Test data near now is
computed from the clock (``harness.clock``); a fixed date is fine only far from the present, where a
window that would drop it fails at once instead of a month later.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCANNED = sorted(
    {*ROOT.glob("tests/**/*.py"), *ROOT.glob("harness/**/*.py"), *ROOT.glob("bench/**/*.py")}
    - {Path(__file__).resolve()}
)  # this file names dates to test the scan
NEAR_YEARS = 3  # how far from today, either way, a named date counts as near the present

# datetime(2026, 11, 1 ...) / date(2026, 11, 1); "2026-11-01..." in a string; epoch seconds such as
# 1_767_225_600 or 1767225600 (ten digits from 1e9, 2001 on).
CALL = re.compile(r"\b(?:datetime|date)\(\s*(\d{4})\s*,\s*(\d{1,2})\s*,\s*(\d{1,2})")
ISO = re.compile(r"(?<![\d:])((?:19|20)\d{2})-(\d{2})-(\d{2})(?![\d:])")
EPOCH = re.compile(r"(?<![\w.])(1[_\d]{9,12})(?![\w.])")


def named_dates(text: str) -> list[tuple[int, datetime]]:
    """Every date ``text`` names, with its line number."""
    found: list[tuple[int, datetime]] = []
    for number, line in enumerate(text.splitlines(), 1):
        for pattern in (CALL, ISO):
            for match in pattern.finditer(line):
                year, month, day = (int(g) for g in match.groups())
                try:
                    found.append((number, datetime(year, month, day, tzinfo=UTC)))
                except ValueError:
                    continue
        for match in EPOCH.finditer(line):
            digits = match.group(1).replace("_", "")
            if len(digits) == 10:
                found.append((number, datetime.fromtimestamp(int(digits), UTC)))
    return found


def near_present(moment: datetime, now: datetime) -> bool:
    return abs((moment - now).days) <= NEAR_YEARS * 366


def test_the_scan_finds_each_way_of_naming_a_date() -> None:
    now = datetime.now(UTC)
    text = "\n".join(
        [
            f"T0 = datetime({now.year}, {now.month}, 1, 12, tzinfo=UTC)",
            f'stamp = "{now:%Y-%m-%d}T12:00:00Z"',
            f"seconds = {int(now.timestamp()):_}",
            f"seconds = {int(now.timestamp())}",
            "far = datetime(2001, 1, 1)  # far from any present this code will see",
            "address = '2001:db8::1'; port = 20_000; big = 10**12",
        ]
    )
    dates = named_dates(text)
    assert [line for line, moment in dates if near_present(moment, now)] == [1, 2, 3, 4]
    assert [line for line, _ in dates] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("path", SCANNED, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_fixed_date_near_the_present(path: Path) -> None:
    now = datetime.now(UTC)
    near = [
        f"line {line}: {moment:%Y-%m-%d}" for line, moment in named_dates(path.read_text()) if near_present(moment, now)
    ]
    assert near == [], f"{path.relative_to(ROOT)} names dates near today; compute them from the clock instead"
