"""Masking secret values out of text that goes back to users (check results, delivery errors) in any spelling.

A secret rarely comes back exactly as stored: a resolver lowercases a host name, IDNA turns it into
``xn--...``, an HTTP library percent-encodes a path, a JSON document escapes quotes and non-ASCII as
``\\u00e9``, a server echoes a header's Basic credentials in base64. Masking only the exact value leaves all of
those readable. Here each secret becomes one pattern in which every character may be written in any case,
percent-encoded (UTF-8 bytes, either hex case, ``+`` for a space), JSON- or backslash-escaped, or as an HTML
character reference, in any mix (a secret over 512 characters: in each encoding taken whole); plus its IDNA
form and its base64 forms at each of the three byte alignments. A message cut short right after the start of
a secret (``abcdef…``) has that start masked too.
"""

from __future__ import annotations

import base64
import functools
import html
import json
import re
import urllib.parse
from collections.abc import Iterable

MASK = "****"
# Shorter base64 runs or cut-off starts than this are too likely to occur by chance to be masked.
_MIN_FRAGMENT = 6
# Longer secrets are matched in each encoding as a whole, not mixed per character: compiling a per-character
# pattern of 8 KiB takes seconds.
_MAX_MIXED = 512
_JSON_SHORT_ESCAPES = {'"': '"', "\\": "\\\\", "/": "/", "\b": "b", "\f": "f", "\n": "n", "\r": "r", "\t": "t"}


def _character(char: str) -> str:
    """A pattern for ``char`` in every spelling the module docstring names (matched case-insensitively)."""
    forms = {re.escape(char), re.escape(char.lower()), re.escape(char.upper())}
    forms.add("".join(f"%{byte:02x}" for byte in char.encode()))
    if char == " ":
        forms.add(r"\+")
    code = ord(char)
    if code > 0xFFFF:  # JSON writes it as a surrogate pair
        high, low = 0xD800 + ((code - 0x10000) >> 10), 0xDC00 + ((code - 0x10000) & 0x3FF)
        forms.add(rf"\\u{high:04x}\\u{low:04x}")
    else:
        forms.add(rf"\\u{code:04x}")
        if code <= 0xFF:
            forms.add(rf"\\x{code:02x}")
    if char in _JSON_SHORT_ESCAPES:
        forms.add(re.escape("\\" + _JSON_SHORT_ESCAPES[char]))
    forms.add(rf"&#0*{code};")
    forms.add(rf"&#x0*{code:x};")
    escaped = html.escape(char)
    if escaped != char:
        forms.add(re.escape(escaped))
    return "(?:" + "|".join(sorted(forms, key=len, reverse=True)) + ")"


def _whole_forms(value: str) -> set[str]:
    """A long secret as itself and in each usual encoding taken whole (matched case-insensitively)."""
    return {
        value,
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote(value),
        urllib.parse.quote_plus(value),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        html.escape(value),
    }


def _base64_runs(value: bytes) -> set[str]:
    """The base64 characters fully decided by ``value`` wherever it starts in an encoded stream (three
    alignments), in the standard and URL-safe alphabets."""
    runs: set[str] = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + value).decode()
        start, end = -(-offset * 8 // 6), (offset + len(value)) * 8 // 6
        run = encoded[start:end]
        if len(run) >= _MIN_FRAGMENT:
            runs.update({run, run.replace("+", "-").replace("/", "_")})
    return runs


def _idna(value: str) -> str | None:
    try:
        encoded = value.encode("idna").decode()
    except UnicodeError:
        return None
    return encoded if encoded.lower() != value.lower() else None


@functools.lru_cache(maxsize=256)
def _pattern(values: tuple[str, ...]) -> re.Pattern[str] | None:
    alternatives: list[str] = []
    for value in values:
        if len(value) <= _MAX_MIXED:
            alternatives.append("".join(_character(char) for char in value))
        else:
            alternatives.extend(re.escape(form) for form in _whole_forms(value))
        alternatives.extend(re.escape(run) for run in _base64_runs(value.encode()))
        if (idna := _idna(value)) is not None:
            alternatives.append(re.escape(idna))
    return re.compile("|".join(alternatives), re.IGNORECASE) if alternatives else None


def mask_secrets(text: str, values: Iterable[str]) -> str:
    """``text`` with every spelling of every non-empty value in ``values`` replaced by ****."""
    unique = tuple(sorted({v for v in values if v}, key=lambda v: (-len(v), v)))
    if not text or not unique:
        return text
    pattern = _pattern(unique)
    if pattern is not None:
        text = pattern.sub(MASK, text)
    return _mask_cut_starts(text, unique)


def _mask_cut_starts(text: str, values: tuple[str, ...]) -> str:
    """``text`` with a start of a secret (at least _MIN_FRAGMENT characters, any case) masked where the text
    was cut right after it: before an ellipsis, or at the very end."""
    ends = [m.start() for m in re.finditer("…", text)] + [len(text)]
    for end in reversed(ends):
        for value in values:
            for length in range(min(len(value) - 1, end), _MIN_FRAGMENT - 1, -1):
                if text[end - length : end].lower() == value[:length].lower():
                    text = text[: end - length] + MASK + text[end:]
                    break
    return text
