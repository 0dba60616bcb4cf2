"""The locations a monitor may name: those a runner has ever served, and those the deployment declares.

A monitor in a location no runner serves would stay PENDING forever with nothing to say why, so creating one
is refused unless a runner has connected from that location at least once (remembered in the database, so a
runner restarting or briefly away does not make its location unknown) or the operator declared it ahead of
its runners with MONITORS_LOCATIONS.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import cast

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from service_runtime.database import Database, UtcDateTime, upsert, utc_now
from service_runtime.errors import InvalidArgument
from service_runtime.settings import StartupError
from services.monitor_svc.domain import is_location_name
from services.monitor_svc.schema import Base


def declared_locations(names: Iterable[str]) -> frozenset[str]:
    """MONITORS_LOCATIONS' names, checked before the service opens anything."""
    if bad := sorted(name for name in names if not is_location_name(name)):
        raise StartupError(
            f"MONITORS_LOCATIONS names {', '.join(map(repr, bad))}: a location is lower-case letters, digits and"
            " dashes (up to 32), and the list is comma-separated"
        )
    return frozenset(names)


class ServedLocationRow(Base):
    __tablename__ = "served_locations"

    name: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    first_served_time: Mapped[datetime] = mapped_column(UtcDateTime())
    last_served_time: Mapped[datetime] = mapped_column(UtcDateTime())


_TABLE = cast(sa.Table, ServedLocationRow.__table__)


class KnownLocations:
    """Served locations (read through a cache that is refreshed when a name is not in it, so a location first
    served through another replica is seen) and declared ones."""

    def __init__(self, database: Database, declared: Iterable[str] = ()) -> None:
        self._db = database
        self.declared = frozenset(declared)
        self._served: frozenset[str] | None = None

    async def served(self, location: str) -> None:
        """Remember that a runner serves ``location`` (called as each runner connects)."""
        if self._served is not None and location in self._served:
            return
        now = utc_now()

        def write(c: sa.Connection) -> None:
            values = {"name": location, "first_served_time": now, "last_served_time": now}
            upsert(c, _TABLE, values, ["last_served_time"])

        await self._db.run(write)
        self._served = (self._served or frozenset()) | {location}

    async def known(self, refresh: bool = False) -> frozenset[str]:
        """Every location a monitor may name, read from the database when ``refresh`` or not yet read."""
        if refresh or self._served is None:

            def read(c: sa.Connection) -> frozenset[str]:
                return frozenset(c.execute(sa.select(_TABLE.c.name)).scalars())

            self._served = await self._db.run(read)
        return self._served | self.declared

    async def require(self, locations: Sequence[str], field: str, already: Iterable[str] = ()) -> None:
        """INVALID_ARGUMENT naming ``field[i]`` for the first of ``locations`` that is unknown. Locations in
        ``already`` (a monitor's current ones, on update) pass: what was accepted once stays acceptable."""
        kept = set(already)
        fresh = [(i, name) for i, name in enumerate(locations) if name not in kept]
        if not fresh:
            return
        known = await self.known()
        if any(name not in known for _, name in fresh):
            known = await self.known(refresh=True)
        for i, name in fresh:
            if name not in known:
                listed = ", ".join(sorted(known)) or "none yet"
                raise InvalidArgument(
                    f"{field}[{i}]",
                    f"no runner serves location {name!r}; known locations: {listed} (a location becomes known when"
                    " a runner started with MONITORS_RUNNER_LOCATION connects, or when MONITORS_LOCATIONS"
                    " declares it; leave locations empty to run on any runner)",
                )
