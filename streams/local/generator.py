"""Realistic sample traffic for demos, tests and benchmarks. Deterministic for a given seed.

Personas: buyers (fit, engage, ask for a demo or read their way to MQL, go through sales),
tyre-kickers (engage a little, some unsubscribe), students, competitors, vendors, anonymous
visitors who never leave contact details, and sales-disqualified leads that get recycled. Events
come out in arrival order: mostly by event time, with a share delivered late and a share
delivered twice, as real trackers and CRM syncs do.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NamedTuple

from schemas.events import SALES_TYPES

START: Final = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
SOURCES: Final[dict[str, list[str | None]]] = {
    "google_ads": ["brand-search", "competitor-terms", "retargeting"],
    "linkedin": ["cfo-carousel", "data-leaders", "webinar-promo"],
    "organic_search": [None],
    "newsletter": ["weekly-digest"],
    "partner": ["reseller-q1", "integration-launch"],
    "events": ["summit-2026", "roadshow"],
}
PERSONAS: Final = (
    ("buyer", 0.22),
    ("tyre_kicker", 0.30),
    ("recycled", 0.05),
    ("student", 0.10),
    ("competitor", 0.05),
    ("vendor", 0.05),
    ("anonymous", 0.23),
)
_SYLLABLES: Final = ("ac", "me", "lo", "ri", "ta", "ven", "zo", "nex", "ar", "ion", "qu", "sol")
_TITLES: Final = {
    "c_level": ["CTO", "Chief Data Officer", "CEO", "CMO"],
    "vp": ["VP Marketing", "VP Engineering", "VP Revenue Operations"],
    "director": ["Director of Analytics", "Head of Data", "Marketing Director"],
    "manager": ["Marketing Manager", "Data Engineering Manager", "Sales Operations Manager"],
    "individual": ["Data Analyst", "Software Engineer", "Marketing Specialist"],
}
_INDUSTRIES: Final = ["software", "financial services", "ecommerce", "healthcare", "manufacturing"]
_COUNTRIES: Final = ["US", "GB", "DE", "FR", "NL", "CA", "BR", "IN"]
_CONTENT: Final = ["whitepaper", "case_study", "ebook", "pricing_guide", "blog"]
_WEB_TYPES: Final = frozenset({"page_view", "pricing_page_view"})
_FREE_MAIL: Final = ["gmail.com", "outlook.com", "yahoo.com"]
_COMPETITOR_DOMAINS: Final = ["rivalfunnel.com", "pipecraft.io", "leadlynx.com"]
_VENDOR_DOMAINS: Final = ["adsagency.example", "printshop.example", "staffpros.example"]
_UNIVERSITIES: Final = ["mit.edu", "stanford.edu", "ox.ac.uk", "unimelb.edu.au"]


@dataclass(frozen=True)
class TrafficShape:
    """How messy the delivery is."""

    late_fraction: float = 0.02
    """Share of events delivered after later events of the same lead (hours to days late)."""
    duplicate_fraction: float = 0.01
    """Share of events delivered a second time."""
    days: int = 90
    """Span of first touches."""
    people_per_company: float = 3.0
    """Average number of people with a company email per company (a buying committee); they
    first touch within weeks of each other."""
    anonymous_browsing: float = 0.0
    """Share of the people who browse before their first form (buyers, tyre-kickers,
    competitors) who do it under a tracker's anonymous id, with a few more visits in the weeks
    before: their form carries that id too, which links it to them. Three in ten of them also
    browse on a second device after their form, under another anonymous id, until a visit
    there carries both ids. The anonymous persona's events are then marked as a visitor's.
    0 gives the traffic of before, byte for byte."""


def generate(leads: int, seed: int, shape: TrafficShape = TrafficShape()) -> list[dict[str, Any]]:
    """Events of `leads` leads as JSON-ready dicts, in arrival order."""
    rng = random.Random(seed)
    arrivals: list[tuple[int, int, dict[str, Any]]] = []
    counter = 0
    names, weights = zip(*PERSONAS, strict=True)
    companies = _companies(rng, leads, shape)
    for index in range(leads):
        persona = rng.choices(names, weights)[0]
        lead = _Lead(rng, f"lead-{seed}-{index:07d}", persona, rng.choice(companies), shape)
        for event in lead.events():
            at = event["occurred_at"]
            delay = timedelta(seconds=rng.randint(0, 30))
            if rng.random() < shape.late_fraction:
                delay = timedelta(hours=rng.randint(2, 96))
            counter += 1
            arrivals.append((_micros(at + delay), counter, event))
            if rng.random() < shape.duplicate_fraction:
                counter += 1
                again = at + delay + timedelta(minutes=rng.randint(1, 600))
                arrivals.append((_micros(again), counter, event))
        for visit in lead.visits:
            counter += 1
            arrivals.append((_micros(visit["occurred_at"]), counter, visit))
    arrivals.sort(key=lambda item: (item[0], item[1]))
    return [_as_json(event) for _, _, event in arrivals]


_COMPANY_EMAIL_SHARE: Final = 0.42
"""Share of leads whose profile has a company email (buyers, recycled, half the tyre-kickers)."""


class _Company(NamedTuple):
    name: str
    first_touch: datetime


def _companies(rng: random.Random, leads: int, shape: TrafficShape) -> list[_Company]:
    count = max(1, round(leads * _COMPANY_EMAIL_SHARE / shape.people_per_company))
    companies: dict[str, _Company] = {}
    while len(companies) < count:
        name = "".join(rng.choice(_SYLLABLES) for _ in range(3)).capitalize()
        if name in companies:
            name = f"{name}{len(companies)}"
        at = START + timedelta(seconds=rng.randint(0, shape.days * 86_400))
        companies[name] = _Company(name, at)
    return list(companies.values())


class _Lead:
    def __init__(
        self,
        rng: random.Random,
        lead_id: str,
        persona: str,
        company: _Company,
        shape: TrafficShape,
    ):
        self.rng = rng
        self.lead_id = lead_id
        self.persona = persona
        self.company = company.name
        self.now = company.first_touch + timedelta(seconds=rng.randint(0, 21 * 86_400))
        self.source = rng.choice(list(SOURCES))
        self.campaign = rng.choice(SOURCES[self.source])
        self.out: list[dict[str, Any]] = []
        self.anonymous_browsing = shape.anonymous_browsing
        self.visits: list[dict[str, Any]] = []
        """Anonymous visits before the first one in `out`, delivered on time."""

    def events(self) -> list[dict[str, Any]]:
        getattr(self, f"_{self.persona}")()
        if self.anonymous_browsing > 0:
            self._browsed_anonymously()
        return self.out

    def _browsed_anonymously(self) -> None:
        # Its own random source, so that the rest of the traffic stays what it was.
        own = random.Random(f"{self.lead_id}-anonymous")
        out = self.out
        if self.persona == "anonymous":
            for event in out:
                event["anonymous_id"] = self.lead_id
            return
        first_form = next(i for i, e in enumerate(out) if e["type"] == "profile_updated")
        if first_form == 0 or own.random() >= self.anonymous_browsing:
            return
        visitor = f"anon-{self.lead_id}"
        visits = []
        at = out[0]["occurred_at"]
        for _ in range(own.randint(2, 8)):
            at -= timedelta(hours=own.randint(6, 96), seconds=own.randint(0, 59))
            kind = own.choice(["page_view", "page_view", "pricing_page_view", "content_download"])
            properties = (
                {"content_category": own.choice(_CONTENT)} if kind == "content_download" else {}
            )
            visits.append(
                {
                    "event_id": str(uuid.UUID(int=own.getrandbits(128), version=4)),
                    "lead_id": visitor,
                    "type": kind,
                    "occurred_at": at,
                    "source": self.source,
                    "campaign": self.campaign,
                    "properties": properties,
                }
            )
        for event in out[:first_form]:
            event["lead_id"] = visitor
        for event in (*visits, *out[:first_form], out[first_form]):
            event["anonymous_id"] = visitor
        self.visits = visits[::-1]
        if own.random() < 0.3:
            self._on_a_second_device(own, first_form)

    def _on_a_second_device(self, own: random.Random, first_form: int) -> None:
        # Known since its form, the person browses on another device for a while (its web
        # visits there are a visitor's), until one event there carries both ids.
        out = self.out
        later = [i for i in range(first_form + 1, len(out)) if out[i]["type"] in _WEB_TYPES]
        if len(later) < 2:
            return
        device = f"anon2-{self.lead_id}"
        start = own.randrange(len(later) - 1)
        *browsed, linking = later[start : start + own.randint(2, 6)]
        for index in browsed:
            out[index]["lead_id"] = device
            out[index]["anonymous_id"] = device
        out[linking]["anonymous_id"] = device

    # personas

    def _buyer(self) -> None:
        rng = self.rng
        self._browse(rng.randint(2, 6), pricing=rng.random() < 0.6)
        self._form(
            rng.choice(["content_download", "webinar_registered", "newsletter_subscribe"]),
            self._fit_profile(),
        )
        self._nurture(rng.randint(3, 12))
        if rng.random() < 0.55:
            self._later(hours=(1, 240))
            self._emit(rng.choice(["demo_request", "contact_sales_request", "free_trial_signup"]))
        else:
            self._nurture(rng.randint(8, 20), intense=True)
        self._sales_cycle()

    def _tyre_kicker(self) -> None:
        rng = self.rng
        self._browse(rng.randint(1, 4))
        profile = self._fit_profile() if rng.random() < 0.5 else self._weak_profile()
        self._form("newsletter_subscribe", profile)
        self._nurture(rng.randint(1, 8))
        if rng.random() < 0.25:
            self._later(days=(5, 40))
            self._emit(rng.choice(["unsubscribe", "email_bounced"]))
            self._nurture(rng.randint(0, 3))

    def _recycled(self) -> None:
        rng = self.rng
        self._form("content_download", self._fit_profile())
        self._later(hours=(1, 48))
        self._emit("demo_request")
        self._later(days=(1, 5))
        self._emit("sales_contacted", {"channel": "call", "bant": {"budget": False, "need": True}})
        self._later(days=(1, 10))
        self._emit("sales_disqualified", {"reason": rng.choice(["no_budget", "no_timeline"])})
        self._later(days=(30, 90))
        self._emit("lead_recycled")
        self._nurture(rng.randint(5, 15), intense=rng.random() < 0.5)
        if rng.random() < 0.4:
            self._emit("contact_sales_request")
            self._sales_cycle()

    def _student(self) -> None:
        rng = self.rng
        profile = {
            "email": f"{self._person()}@{rng.choice(_UNIVERSITIES)}",
            "job_title": rng.choice(["Student", "PhD Candidate", "Graduate Student"]),
        }
        self._form(rng.choice(["content_download", "webinar_registered"]), profile)
        self._nurture(rng.randint(2, 10), intense=True)
        if rng.random() < 0.3:
            self._emit("demo_request")

    def _competitor(self) -> None:
        rng = self.rng
        self._browse(rng.randint(3, 8), pricing=True)
        profile = {
            "email": f"{self._person()}@{rng.choice(_COMPETITOR_DOMAINS)}",
            "job_title": "Product Manager",
            "company_size": rng.randint(50, 400),
        }
        self._form("content_download", profile)
        self._nurture(rng.randint(2, 6), intense=True)
        self._emit("demo_request")

    def _vendor(self) -> None:
        rng = self.rng
        profile = {
            "email": f"{self._person()}@{rng.choice(_VENDOR_DOMAINS)}",
            "job_title": "Account Executive",
            "company_size": rng.randint(10, 200),
        }
        self._form("contact_sales_request", profile)
        self._nurture(rng.randint(0, 4))

    def _anonymous(self) -> None:
        self._browse(self.rng.randint(1, 10), pricing=self.rng.random() < 0.3)

    # building blocks

    def _sales_cycle(self) -> None:
        rng = self.rng
        if rng.random() < 0.15:
            return  # sales never gets to it
        self._later(days=(1, 7))
        bant = {key: rng.random() < 0.7 for key in ("budget", "authority", "need", "timeline")}
        self._emit(
            "sales_contacted", {"channel": rng.choice(["call", "email", "meeting"]), "bant": bant}
        )
        if rng.random() < 0.2:
            self._later(days=(1, 14))
            self._emit(
                "sales_disqualified",
                {
                    "reason": rng.choice(
                        ["no_budget", "no_authority", "no_need", "no_timeline", "invalid_contact"]
                    )
                },
            )
            return
        if rng.random() < 0.35:
            return  # still talking
        self._later(days=(3, 30))
        self._emit("quote_requested")
        self._later(days=(7, 60))
        if rng.random() < 0.5:
            self._emit("deal_lost", {"reason": rng.choice(["price", "competitor", "no_decision"])})
            return
        self._emit(
            "deal_won",
            {
                "amount": float(rng.randrange(5_000, 120_000, 500)),
                "currency": rng.choice(["USD", "EUR"]),
            },
        )
        if rng.random() < 0.3:
            self._later(days=(20, 120))
            self._emit(
                "advocacy", {"kind": rng.choice(["testimonial", "review", "backlink", "referral"])}
            )

    def _browse(self, pages: int, pricing: bool = False) -> None:
        for _ in range(pages):
            self._later(minutes=(1, 30))
            self._emit(
                "page_view",
                {"url": f"https://example.com/{self.rng.choice(['', 'blog', 'product', 'docs'])}"},
            )
        if pricing:
            self._later(minutes=(1, 10))
            self._emit("pricing_page_view", {"url": "https://example.com/pricing"})

    def _form(self, form: str, profile: dict[str, Any]) -> None:
        self._later(minutes=(1, 60))
        # The form and the profile it carries share one instant; the profile applies first.
        self._emit("profile_updated", profile)
        properties = (
            {"content_category": self.rng.choice(_CONTENT)} if form == "content_download" else {}
        )
        self._emit(form, properties)

    def _nurture(self, touches: int, intense: bool = False) -> None:
        rng = self.rng
        for _ in range(touches):
            self._later(hours=(2, 48) if intense else (24, 24 * 14))
            kind = rng.choices(
                [
                    "email_open",
                    "email_click",
                    "content_download",
                    "webinar_attended",
                    "pricing_page_view",
                    "page_view",
                    "social_engagement",
                ],
                [3, 3, 2, 1, 2 if intense else 1, 3, 1],
            )[0]
            properties: dict[str, Any] = {}
            if kind == "content_download":
                properties["content_category"] = rng.choice(_CONTENT)
            self._emit(kind, properties)

    def _fit_profile(self) -> dict[str, Any]:
        rng = self.rng
        level = rng.choice(["c_level", "vp", "director", "manager", "manager", "individual"])
        company = self.company
        return {
            "email": f"{self._person()}@{company.lower()}.com",
            "job_title": rng.choice(_TITLES[level]),
            "company": company,
            "company_size": rng.choice([25, 80, 150, 400, 1200, 8000]),
            "industry": rng.choice(_INDUSTRIES),
            "country": rng.choice(_COUNTRIES),
        }

    def _weak_profile(self) -> dict[str, Any]:
        rng = self.rng
        return {
            "email": f"{self._person()}@{rng.choice(_FREE_MAIL)}",
            "job_title": rng.choice(["Consultant", "Freelancer", "Owner"]),
            "company_size": rng.randint(1, 9),
        }

    def _person(self) -> str:
        first_name = self.rng.choice(["ana", "ben", "chen", "dara", "eli", "fay"])
        return f"{first_name}.{self.rng.randint(1, 99999)}"

    def _later(
        self,
        minutes: tuple[int, int] | None = None,
        hours: tuple[int, int] | None = None,
        days: tuple[int, int] | None = None,
    ) -> None:
        rng = self.rng
        if minutes:
            self.now += timedelta(minutes=rng.randint(*minutes))
        if hours:
            self.now += timedelta(hours=rng.randint(*hours))
        if days:
            self.now += timedelta(days=rng.randint(*days))
        self.now += timedelta(seconds=rng.randint(0, 59))

    def _emit(self, event_type: str, properties: dict[str, Any] | None = None) -> None:
        source, campaign = self.source, self.campaign
        if event_type.startswith("email_"):
            source, campaign = "email", "nurture-sequence"
        elif event_type in SALES_TYPES:
            source, campaign = "crm", None
        self.out.append(
            {
                "event_id": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
                "lead_id": self.lead_id,
                "type": event_type,
                "occurred_at": self.now,
                "source": source,
                "campaign": campaign,
                "properties": properties or {},
            }
        )


def _micros(at: datetime) -> int:
    return (at - START) // timedelta(microseconds=1)


def _as_json(event: dict[str, Any]) -> dict[str, Any]:
    return {**event, "occurred_at": event["occurred_at"].isoformat().replace("+00:00", "Z")}


# Heavy traffic: one busy lead, one big company (benchmarks and tests of bounded state).

HEAVY_START: Final = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
_TOUCHES: Final = (
    "page_view",
    "email_open",
    "email_click",
    "content_download",
    "pricing_page_view",
)


def _profile(lead: str, company: str, at: datetime) -> dict[str, Any]:
    return {
        "event_id": f"{lead}-profile",
        "lead_id": lead,
        "type": "profile_updated",
        "occurred_at": at.isoformat(),
        "properties": {
            "email": f"{lead}@{company}",
            "job_title": "Marketing Manager",
            "company_size": 400,
            "industry": "software",
        },
    }


def _touch(lead: str, n: int, at: datetime, kind: str = "page_view") -> dict[str, Any]:
    return {
        "event_id": f"{lead}-{n}",
        "lead_id": lead,
        "type": kind,
        "occurred_at": at.isoformat(),
        "properties": {"content_category": "blog"} if kind == "content_download" else {},
    }


def lead_events(leads: int, per_lead: int, prefix: str) -> list[dict[str, Any]]:
    """`leads` leads of `per_lead` events each (a profile, then page views every 30 s), in
    event-time order."""
    documents = []
    for index in range(leads):
        lead = f"{prefix}-{index}"
        start = HEAVY_START + timedelta(seconds=index)
        documents.append(_profile(lead, "example.com", start))
        documents += [
            _touch(lead, n, start + timedelta(seconds=30 * n)) for n in range(1, per_lead)
        ]
    return sorted(documents, key=lambda d: (d["occurred_at"], d["event_id"]))


def account_events(companies: int, people: int, by_person: bool) -> list[dict[str, Any]]:
    """`people` people at each of `companies` companies, a profile and 20 touches each over
    three weeks; in event-time order, or person by person."""
    per_person = []
    for company in range(companies):
        domain = f"company{company}.com"
        for person in range(people):
            lead = f"{domain}-p{person}"
            start = HEAVY_START + timedelta(minutes=person)
            events = [_profile(lead, domain, start)]
            for n in range(1, 21):
                at = start + timedelta(hours=25 * n)
                events.append(_touch(lead, n, at, _TOUCHES[n % len(_TOUCHES)]))
            per_person.append(events)
    documents = [document for person in per_person for document in person]
    if by_person:
        return documents
    return sorted(documents, key=lambda d: (d["occurred_at"], d["event_id"]))
