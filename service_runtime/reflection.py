"""Server reflection that carries the protos' comments, so ``grpcurl describe`` shows them.

The generated modules register their files without source info, and protobuf's upb pool drops it anyway when a
file is copied out, so reflection answered with bare descriptors. ``scripts/gen_protos.sh`` also writes
``gen/monitors/v1/descriptor_set.binpb`` (``protoc --include_source_info --include_imports``); reflection answers
each of its files from there, comments included, and every other file (health, reflection) from the pool.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2

from monitors.v1 import common_pb2

DESCRIPTOR_SET = Path(common_pb2.__file__).with_name("descriptor_set.binpb")
log = logging.getLogger(__name__)


def load_descriptor_set(path: Path = DESCRIPTOR_SET) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """The files of the descriptor set at ``path`` by name; none (and a warning) if it cannot be read."""
    try:
        files = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes()).file
    except (OSError, ValueError) as error:
        log.warning("reflection without comments: no descriptor set", extra={"path": str(path), "error": str(error)})
        return {}
    return {file.name: file for file in files}


class DocumentedFile:
    """A file descriptor as reflection uses it (its name, its dependencies, CopyToProto), copied from the
    descriptor set's proto, which keeps the comments."""

    def __init__(self, proto: descriptor_pb2.FileDescriptorProto, dependencies: list[Any]) -> None:
        self.name = proto.name
        self.dependencies = dependencies
        self._proto = proto

    def CopyToProto(self, proto: descriptor_pb2.FileDescriptorProto) -> None:
        proto.CopyFrom(self._proto)


class DocumentedPool:
    """A descriptor pool for the reflection servicer whose files carry source info where ``documented`` has it.

    Lookups go to ``pool``; the files found are answered from ``documented`` by name (their dependencies too),
    so what a client receives is the same descriptor, with the comments.
    """

    def __init__(self, pool: Any, documented: Mapping[str, descriptor_pb2.FileDescriptorProto]) -> None:
        self._pool = pool
        self._documented = documented

    def _file(self, descriptor: Any) -> Any:
        proto = self._documented.get(descriptor.name)
        if proto is None:
            return descriptor
        return DocumentedFile(proto, [self._file(dependency) for dependency in descriptor.dependencies])

    def FindFileByName(self, name: str) -> Any:
        return self._file(self._pool.FindFileByName(name))

    def FindFileContainingSymbol(self, symbol: str) -> Any:
        return self._file(self._pool.FindFileContainingSymbol(symbol))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)
