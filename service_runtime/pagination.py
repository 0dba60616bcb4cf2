"""AIP-158 pagination: page size rules and opaque page tokens."""

from __future__ import annotations

import base64
import binascii
import json

from service_runtime.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def page_size(requested: int, *, field: str = "page_size", maximum: int = MAX_PAGE_SIZE) -> int:
    """0 means the default (50); above ``maximum`` (1000 unless a resource's size asks for fewer) is clamped;
    negative is INVALID_ARGUMENT."""
    if requested < 0:
        raise InvalidArgument(field, "must not be negative")
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, maximum)


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
