"""Typed domain errors. Domain code raises these; one interceptor maps them to gRPC status codes.

Nothing here imports grpc: the mapping lives in :mod:`service_runtime.interceptors`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


class DomainError(Exception):
    """Base of every error a caller is meant to see. ``message`` is safe to show to the caller."""

    reason = "ERROR"

    def __init__(self, message: str, metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field: its path in the request (``spec.website.url``) and what is wrong with it."""

    field: str
    description: str


class InvalidArgument(DomainError):
    """The request names a field whose value cannot be accepted."""

    reason = "INVALID_ARGUMENT"

    def __init__(self, field: str, description: str, *more: FieldViolation) -> None:
        self.violations: tuple[FieldViolation, ...] = (FieldViolation(field, description), *more)
        summary = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(f"invalid argument: {summary}")

    @classmethod
    def of(cls, violations: Sequence[FieldViolation]) -> InvalidArgument:
        """Build one error carrying several violations (at least one)."""
        first, *rest = violations
        return cls(first.field, first.description, *rest)


class Violations:
    """Collects every invalid field of a request, so one INVALID_ARGUMENT names them all."""

    def __init__(self) -> None:
        self.found: list[FieldViolation] = []

    def add(self, path: str, description: str) -> None:
        self.found.append(FieldViolation(path.lstrip("."), description))

    def raise_any(self) -> None:
        if self.found:
            raise InvalidArgument.of(self.found)


def require_id(value: str, field: str, example: str, listing: str) -> str:
    """``value``, or INVALID_ARGUMENT naming ``field`` when it is empty: a missing id is a malformed request,
    not a resource that cannot be found (``example`` such as "mon_...", ``listing`` the call that shows them)."""
    if not value:
        raise InvalidArgument(field, f"is required: the id, such as {example} ({listing} shows them)")
    return value


class NotFound(DomainError):
    """The resource does not exist, or belongs to another user (we never say which)."""

    reason = "NOT_FOUND"

    def __init__(self, resource_type: str, resource_id: str) -> None:
        super().__init__(
            f"{resource_type} {resource_id} not found",
            {"resource_type": resource_type, "resource_id": resource_id},
        )


class AlreadyExists(DomainError):
    reason = "ALREADY_EXISTS"


class Unauthenticated(DomainError):
    """No credentials, or credentials that are unknown, expired or revoked."""

    reason = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    reason = "PERMISSION_DENIED"


class FailedPrecondition(DomainError):
    reason = "FAILED_PRECONDITION"


class ResourceExhausted(DomainError):
    """A quota or rate limit was hit; ``limit`` names which."""

    reason = "RESOURCE_EXHAUSTED"

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message, {"limit": limit})


class Unavailable(DomainError):
    """A dependency cannot be reached right now; the caller may retry."""

    reason = "UNAVAILABLE"


class NotImplementedYet(DomainError):
    """The contract has the RPC but this release does not serve it yet."""

    reason = "UNIMPLEMENTED"
