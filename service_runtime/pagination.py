"""AIP-158 pagination: page size rules, opaque page tokens, and :class:`PageRequest`, the one way a listing
reads a page and decides whether another follows."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from service_runtime.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
T = TypeVar("T")


def page_size(requested: int, *, field: str = "page_size", maximum: int = MAX_PAGE_SIZE) -> int:
    """0 means the default (50, or ``maximum`` when that is lower); above ``maximum`` (1000 unless a resource's
    size asks for fewer) is clamped; negative is INVALID_ARGUMENT."""
    if requested < 0:
        raise InvalidArgument(field, "must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, maximum)


def encode_page_token(after: str) -> str:
    """An opaque token that resumes a listing after the key ``after``."""
    return base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode().rstrip("=")


def decode_page_token(token: str, *, field: str = "page_token") -> str | None:
    """The key to resume after, None for the first page; INVALID_ARGUMENT for a token we did not issue."""
    if not token:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        after = payload["after"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidArgument(field, "is not a page token returned by this listing") from None
    if not isinstance(after, str):
        raise InvalidArgument(field, "is not a page token returned by this listing")
    return after


@dataclass(frozen=True)
class PageRequest:
    """One page of a listing ordered by a string key: read up to :attr:`read_limit` items after :attr:`after`,
    then :meth:`cut` them into the page and the next page's token.

    One more item than the page is read, so the token is handed out only when another item follows: a
    listing whose count is a multiple of the page size ends on a full page, not on an empty one after it."""

    size: int
    after: str | None  # the key to resume after; None for the first page

    @classmethod
    def of(cls, size: int, token: str, *, maximum: int = MAX_PAGE_SIZE) -> PageRequest:
        """The page asked for by a request's ``page_size`` and ``page_token`` (INVALID_ARGUMENT naming either)."""
        return cls(page_size(size, maximum=maximum), decode_page_token(token))

    @property
    def read_limit(self) -> int:
        return self.size + 1

    def cut(self, found: Sequence[T], key: Callable[[T], str]) -> tuple[list[T], str]:
        """The page (the first :attr:`size` of ``found``, read in key order) and the next page's token: the key of
        its last item when ``found`` holds more, else ""."""
        page = list(found[: self.size])
        return page, encode_page_token(key(page[-1])) if len(found) > self.size else ""
