"""The `[handoff]` section of the rules file: who owns an MQL, and how fast sales must answer.

Owners have a time zone, working hours, holidays and a weight; queues choose MQLs by country,
company size, source or grade, and name their owners; response targets are minutes of the
owner's working time, per MQL kind and grade. docs/handoff.md explains them.
"""

from __future__ import annotations

from datetime import date
from functools import cached_property
from typing import Annotated, Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

from schemas.countries import country_code
from streams.core.business_hours import Calendar, calendar
from streams.core.routing import Candidate

DEFAULT_TARGET: Final = "default"
"""The key of a kind's target for grades not listed."""

Minutes = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NameSet = Annotated[frozenset[str], PlainSerializer(sorted, return_type=list[str])]
"""Printed sorted, so `leadflow rules show` says the same thing every time."""
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OwnerRules(_Section):
    """One owner: where and when they work, and their share of a queue's leads."""

    zone: str
    hours: str = "mon-fri 09:00-17:00"
    holidays: tuple[date, ...] = ()
    weight: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 1.0
    away: bool = False
    """An owner away gets no new leads (those they own stay theirs)."""

    @field_validator("zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name: Europe/Berlin)") from None
        return value

    @model_validator(mode="after")
    def _readable_hours(self) -> OwnerRules:
        calendar(self.zone, self.hours)  # raises ValueError saying what is wrong
        return self

    @cached_property
    def calendar(self) -> Calendar:
        return calendar(self.zone, self.hours, frozenset(self.holidays))


class QueueRules(_Section):
    """A queue: the MQLs it takes (every condition given must hold) and its owners."""

    id: Name
    owners: Annotated[tuple[Name, ...], Field(min_length=1)]
    countries: NameSet = frozenset()
    sources: NameSet = frozenset()
    grades: NameSet = frozenset()
    company_size_at_least: Annotated[int, Field(ge=0)] | None = None
    company_size_below: Annotated[int, Field(gt=0)] | None = None

    @field_validator("countries")
    @classmethod
    def _country_codes(cls, value: frozenset[str]) -> frozenset[str]:
        codes = set()
        for name in value:
            code = country_code(name)
            if code is None:
                raise ValueError(f"not a country: {name!r}")
            codes.add(code)
        return frozenset(codes)

    def takes(self, profile: dict[str, Any], source: str | None, grade: str | None) -> bool:
        """Whether this queue takes an MQL with this profile, first-touch source and grade."""
        if self.countries and profile.get("country") not in self.countries:
            return False
        if self.sources and source not in self.sources:
            return False
        if self.grades and grade not in self.grades:
            return False
        size = profile.get("company_size")
        if self.company_size_at_least is not None and (
            size is None or size < self.company_size_at_least
        ):
            return False
        return self.company_size_below is None or (
            size is not None and size < self.company_size_below
        )


class HandoffRules(_Section):
    """Owners, queues (the first that takes an MQL gets it) and response targets."""

    owners: dict[Name, OwnerRules]
    queues: Annotated[tuple[QueueRules, ...], Field(min_length=1)]
    targets: dict[Literal["active", "passive"], dict[str, Minutes]] = {
        "active": {DEFAULT_TARGET: 60.0},
        "passive": {DEFAULT_TARGET: 480.0},
    }
    """Minutes of the owner's working time from the MQL to the first sales touch, per MQL kind
    and grade (`default`: the other grades)."""
    due_soon_share: Annotated[float, Field(gt=0, lt=1)] = 0.75
    """The share of a target's working time after which an untouched MQL is due soon."""

    @model_validator(mode="after")
    def _queues_name_known_owners(self) -> HandoffRules:
        ids = [queue.id for queue in self.queues]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"queues: ids used twice: {', '.join(repeated)}")
        for queue in self.queues:
            unknown = sorted(set(queue.owners) - set(self.owners))
            if unknown:
                raise ValueError(f"queue {queue.id}: unknown owners: {', '.join(unknown)}")
        for kind in ("active", "passive"):
            if DEFAULT_TARGET not in self.targets.get(kind, {}):
                raise ValueError(f"targets.{kind}: give a `default` (minutes)")
        return self

    def candidates(self, queue: QueueRules) -> list[Candidate]:
        """The queue's owners as routing reads them."""
        return [
            Candidate(owner_id, self.owners[owner_id].weight, self.owners[owner_id].away)
            for owner_id in queue.owners
        ]

    def target_seconds(self, mql_kind: str, grade: str | None) -> int:
        """The response target of an MQL of this kind and grade, in working seconds."""
        targets = self.targets[mql_kind]  # type: ignore[index]
        minutes = targets.get(grade or DEFAULT_TARGET, targets[DEFAULT_TARGET])
        return round(minutes * 60)
