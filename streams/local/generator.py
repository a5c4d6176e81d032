"""Realistic sample traffic for demos, tests and benchmarks. Deterministic for a given seed.

Personas: buyers (fit, engage, ask for a demo or read their way to MQL, go through sales),
tyre-kickers (engage a little, some unsubscribe), students, competitors, vendors, anonymous
visitors who never leave contact details, and sales-disqualified leads that get recycled. Events
come out in arrival order: mostly by event time, with a share delivered late and a share
delivered twice, as real trackers and CRM syncs do.

Sales works MQLs as the rules hand them off: the core's routing names the rep (the rules'
owners; now and then the CRM reassigns the lead), who answers in their own working hours, fast
or slow (`REPS`), and the sooner the first touch, the likelier the lead qualifies and buys
(`SPEED_TO_LEAD`). docs/handoff.md, "Generated traffic".
"""

from __future__ import annotations

import functools
import math
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, NamedTuple

from schemas.events import EVENT_ADAPTER, HANDOFF_TYPES, SALES_TYPES
from streams.core.business_hours import Calendar, due_at
from streams.core.fold import trace
from streams.core.handoff import owner_of
from streams.core.lead import Attribution, entry_of
from streams.core.revisions import instant_of
from streams.core.rules import Rules, load_rules

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


class SalesRep(NamedTuple):
    """How one of the rules' owners answers the MQLs they get."""

    owner_id: str
    median_minutes: float
    """Median of the working minutes from an MQL (or the CRM's assignment) to the first touch."""
    spread: float
    """Log-normal sigma of that delay: how often the rep is much faster or slower."""
    never: float
    """Share of their MQLs the rep never touches."""
    vacation: tuple[date, ...] = ()
    """Days off beyond the rules' holidays, in the rep's zone: nobody takes over."""


def _week(monday: date) -> tuple[date, ...]:
    return tuple(monday + timedelta(days=n) for n in range(7))


REPS: Final = {
    rep.owner_id: rep
    for rep in (
        SalesRep("ana", median_minutes=3, spread=1.0, never=0.02),
        SalesRep("ben", median_minutes=6, spread=1.2, never=0.03),
        SalesRep(
            "eva",
            median_minutes=40,
            spread=1.3,
            never=0.05,
            vacation=_week(date(2026, 2, 9)) + _week(date(2026, 2, 16)),
        ),
        SalesRep("carl", median_minutes=300, spread=1.0, never=0.08),
        SalesRep("ivy", median_minutes=60, spread=1.5, never=0.35),
    )
}
"""The default rules' owners as reps: ana and ben fast, eva medium (away a week in February),
carl slow, ivy often never."""
_ANY_REP: Final = SalesRep("", median_minutes=60, spread=1.2, never=0.1)
"""How an owner missing from `REPS` answers."""
SPEED_TO_LEAD: Final = (
    (5.0, 0.90, 0.60),
    (30.0, 0.75, 0.48),
    (240.0, 0.60, 0.36),
    (1440.0, 0.45, 0.25),
    (math.inf, 0.30, 0.15),
)
"""(up to so many minutes from the MQL to the first touch, P(reached), P(won | SQL)): a lead
touched quickly is reached (a contact: an SQL) and buys more often; one touched late mostly
never answers the attempts (the MIT/InsideSales lead-response pattern)."""
CRM_REASSIGNED: Final = 0.05
"""Share of MQLs the CRM gives to another owner than the routing's, minutes after the MQL."""
_EXTRA_ATTEMPT: Final = 0.4
"""Chance of one more unanswered attempt (up to four) before the lead is reached."""
_QUALIFIED_OUT: Final = 0.15
"""Share of reached leads (SQLs) that sales disqualifies after talking to them."""


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
    tune_truth: bool = False
    """Traffic with a known truth for `leadflow tune` (`TUNE_TRUTH`): attending a webinar and
    downloading a case study before the MQL really make sales reach a lead more often; page
    views and social engagement are coin flips that change nothing; sales disqualify for
    `no_budget` only at companies under 20 employees. False gives the traffic of before,
    byte for byte."""


TUNE_TRUTH: Final = {
    "base_reached": 0.2,
    "webinar_attended": 0.35,
    "case_study": 0.35,
    "no_budget_below_employees": 20,
    "no_budget_share": 0.7,
}
"""The truth of `TrafficShape.tune_truth`: a worked MQL is reached (an SQL) with probability
`base_reached`, plus `webinar_attended` if the lead attended a webinar before it, plus
`case_study` if it downloaded a case study; nothing else matters. Of the reached leads at
companies under `no_budget_below_employees`, `no_budget_share` are disqualified for
`no_budget` (nobody else is). Each buyer attends a webinar, downloads a case study, browses
and engages on social media with a coin flip of its own (`_TRUTH_SHARES`)."""
_TRUTH_SHARES: Final = {"webinar": 0.4, "case_study": 0.4, "browses": 0.5, "social": 0.5}
_TRUTH_SIZES: Final = [5, 12, 25, 80, 150, 400, 1200, 8000]
_TRUTH_CONTENT: Final = ["whitepaper", "ebook", "pricing_guide", "blog"]


def generate(leads: int, seed: int, shape: TrafficShape = TrafficShape()) -> list[dict[str, Any]]:
    """Events of `leads` leads as JSON-ready dicts, in arrival order."""
    rng = random.Random(seed)
    arrivals: list[tuple[int, int, dict[str, Any]]] = []
    counter = 0
    names, weights = zip(*PERSONAS, strict=True)
    companies = _companies(rng, leads, shape)
    for index in range(leads):
        persona = rng.choices(names, weights)[0]
        if shape.tune_truth and persona == "recycled":
            persona = "buyer"  # sales always reaches a recycled lead: not the truth's outcome
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
        self.worked_mql: int | None = None
        """When the MQL sales last worked happened (microseconds since the epoch)."""
        self.anonymous_browsing = shape.anonymous_browsing
        self.visits: list[dict[str, Any]] = []
        """Anonymous visits before the first one in `out`, delivered on time."""
        self.truth = shape.tune_truth
        self.traits: dict[str, bool] = {}
        """With `truth`: the lead's coin flips (`_TRUTH_SHARES`)."""
        self.company_size: int | None = None
        if self.truth:
            self.traits = {name: rng.random() < share for name, share in _TRUTH_SHARES.items()}

    def events(self) -> list[dict[str, Any]]:
        getattr(self, f"_{self.persona}")()
        # A buyer's sales touches may come before the end of its nurture.
        self.out.sort(key=_occurred_at)
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
        if self.truth:
            self._coin_flips()
        self._nurture(rng.randint(3, 12))
        if rng.random() < 0.55:
            self._later(hours=(1, 240))
            self._emit(rng.choice(["demo_request", "contact_sales_request", "free_trial_signup"]))
        else:
            self._nurture(rng.randint(8, 20), intense=True)
        self._sales_cycle()

    def _coin_flips(self) -> None:
        """The tune truth's behaviours of this buyer, right after its form: before anything
        could make it an MQL (its nurture holds none of them)."""
        for trait, kind, properties in (
            ("social", "social_engagement", {}),
            ("webinar", "webinar_attended", {}),
            ("case_study", "content_download", {"content_category": "case_study"}),
        ):
            if self.traits[trait]:
                self._later(hours=(2, 72))
                self._emit(kind, properties)

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
        # Sales reached them (whatever the rep's odds) and found no budget or timeline.
        self._handoff(bant={"budget": False, "need": True}, sure=True)
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
        """Sales works the lead's new MQL, if it has one: the rep's touches, then the deal,
        likelier the sooner the first touch came."""
        rng = self.rng
        reached = self._handoff()
        if reached is None:
            return
        _, _, p_won = next(band for band in SPEED_TO_LEAD if reached.response <= band[0])
        reasons = ["no_budget", "no_authority", "no_need", "no_timeline", "invalid_contact"]
        qualified_out = rng.random() < _QUALIFIED_OUT
        if self.truth:
            reasons.remove("no_budget")
            small = (self.company_size or 0) < TUNE_TRUTH["no_budget_below_employees"]
            if small and rng.random() < TUNE_TRUTH["no_budget_share"]:
                qualified_out, reasons = True, ["no_budget"]
        if qualified_out:
            self.now = due_at(reached.calendar, self.now, rng.randint(30, 5 * 480) * 60) or self.now
            self._emit("sales_disqualified", {"reason": rng.choice(reasons)})
            return
        won = rng.random() < p_won
        if not won and rng.random() < 0.45:
            return  # still talking
        self._later(days=(3, 30))
        self._emit("quote_requested")
        self._later(days=(7, 60))
        if not won:
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

    def _handoff(self, bant: dict[str, bool] | None = None, sure: bool = False) -> _Reached | None:
        """The touches of the rep who gets the lead's new MQL (the core's owner, or the CRM's),
        in the rep's working time: attempts, then a contact (with `bant`, or random answers).
        None: no new MQL, never touched, or never reached (unless `sure`). Leaves `now` at the
        last touch."""
        rng = self.rng
        mql = self._new_mql()
        if mql is None or mql.owner is None:
            return None
        owner_id, mql_at = mql.owner, mql.at
        since = mql_at
        if rng.random() < CRM_REASSIGNED:
            owner_id = rng.choice([o for o in _owners() if o != owner_id] or [owner_id])
            since += timedelta(minutes=rng.randint(1, 30), seconds=rng.randint(0, 59))
            self.now = since
            self._emit("owner_assigned", {"owner_id": owner_id, "team": _team_of(owner_id)})
        rep = REPS.get(owner_id, _ANY_REP)
        # The truth's outcome hangs on the lead's behaviour alone: sales touches every MQL.
        if rng.random() < rep.never and not sure and not self.truth:
            return None
        calendar = rep_calendar(owner_id)
        delay = rng.lognormvariate(math.log(rep.median_minutes), rep.spread)
        # At least a minute: a touch stays after its MQL's event even when delivered on time
        # (up to 30 s later); at most four working weeks.
        at = due_at(calendar, since, round(60 * min(max(delay, 1.0), 20 * 480.0)))
        if at is None:
            return None
        first = at
        attempts = 1
        while attempts < 4 and rng.random() < _EXTRA_ATTEMPT:
            attempts += 1
        for _ in range(attempts):
            self.now = at
            self._emit("sales_attempted", {"channel": rng.choice(["call", "email"])}, owner_id)
            at = due_at(calendar, at, rng.randint(5, 480) * 60) or at
        response = (first - mql_at) / timedelta(minutes=1)
        _, p_reached, _ = next(band for band in SPEED_TO_LEAD if response <= band[0])
        if self.truth:
            p_reached = (
                TUNE_TRUTH["base_reached"]
                + TUNE_TRUTH["webinar_attended"] * self.traits["webinar"]
                + TUNE_TRUTH["case_study"] * self.traits["case_study"]
            )
        if rng.random() >= p_reached and not sure:
            if rng.random() < 0.5:  # sales gives up on it, days later
                self.now = due_at(calendar, at, rng.randint(480, 5 * 480) * 60) or at
                reason = rng.choice(["invalid_contact", "no_need", "no_timeline"])
                self._emit("sales_disqualified", {"reason": reason})
            return None
        self.now = at
        if bant is None:
            bant = {key: rng.random() < 0.7 for key in ("budget", "authority", "need", "timeline")}
        channel = rng.choice(["call", "email", "meeting"])
        self._emit("sales_contacted", {"channel": channel, "bant": bant}, owner_id)
        return _Reached(calendar, response)

    def _new_mql(self) -> _Mql | None:
        """The lead's first MQL that sales has not worked yet, as the core makes it from the
        lead's events so far (its moment, and its owner by the rules' routing)."""
        rules = _rules()
        entries = []
        attribution: Attribution | None = None
        for document in self.out:
            if document["type"] in HANDOFF_TYPES:
                continue  # they move no stage
            entry = entry_of(EVENT_ADAPTER.validate_python(document))
            entries.append(entry)
            if document["source"] is not None and (
                attribution is None or entry[:3] < attribution[:3]
            ):
                attribution = Attribution(*entry[:3], document["source"], document["campaign"])
        entries.sort()
        seen = 0
        for _, fold in trace(entries, attribution, rules):
            if len(fold.transitions) == seen:
                continue
            for transition in fold.transitions[seen:]:
                if transition.to_stage == "mql" and (
                    self.worked_mql is None or transition.at > self.worked_mql
                ):
                    self.worked_mql = transition.at
                    owner = None
                    if rules.handoff is not None:
                        owner = owner_of(self.lead_id, transition.queue, rules.handoff)
                    return _Mql(instant_of(transition.at), owner)
            seen = len(fold.transitions)
        return None

    def _browse(self, pages: int, pricing: bool = False) -> None:
        if self.truth and not self.traits["browses"]:
            return
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
        content = _TRUTH_CONTENT if self.truth else _CONTENT
        properties = (
            {"content_category": self.rng.choice(content)} if form == "content_download" else {}
        )
        self._emit(form, properties)

    def _nurture(self, touches: int, intense: bool = False) -> None:
        rng = self.rng
        if self.truth:
            self._truth_nurture(touches, intense)
            return
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

    def _truth_nurture(self, touches: int, intense: bool) -> None:
        """Nurture without the truth's coin-flip behaviours (webinars, case studies, page views,
        social engagement), so that only the coin flips decide who has them."""
        rng = self.rng
        for _ in range(touches):
            self._later(hours=(2, 48) if intense else (24, 24 * 14))
            kind = rng.choices(
                ["email_open", "email_click", "content_download", "pricing_page_view"],
                [3, 3, 2, 2 if intense else 1],
            )[0]
            properties: dict[str, Any] = {}
            if kind == "content_download":
                properties["content_category"] = rng.choice(_TRUTH_CONTENT)
            self._emit(kind, properties)

    def _fit_profile(self) -> dict[str, Any]:
        rng = self.rng
        level = rng.choice(["c_level", "vp", "director", "manager", "manager", "individual"])
        company = self.company
        profile: dict[str, Any] = {
            "email": f"{self._person()}@{company.lower()}.com",
            "job_title": rng.choice(_TITLES[level]),
            "company": company,
            "company_size": rng.choice(
                _TRUTH_SIZES if self.truth else [25, 80, 150, 400, 1200, 8000]
            ),
            "industry": rng.choice(_INDUSTRIES),
            "country": rng.choice(_COUNTRIES),
        }
        self.company_size = profile["company_size"]
        return profile

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

    def _emit(
        self,
        event_type: str,
        properties: dict[str, Any] | None = None,
        owner_id: str | None = None,
    ) -> None:
        source, campaign = self.source, self.campaign
        if event_type.startswith("email_"):
            source, campaign = "email", "nurture-sequence"
        elif event_type in SALES_TYPES:
            source, campaign = "crm", None
        if owner_id is not None:
            # The CRM's activity names who did it (an extra property: the contract keeps it).
            properties = {**(properties or {}), "owner_id": owner_id}
        self.out.append(
            {
                "event_id": _uuid4(self.rng.getrandbits(128)),
                "lead_id": self.lead_id,
                "type": event_type,
                "occurred_at": self.now,
                "source": source,
                "campaign": campaign,
                "properties": properties or {},
            }
        )


class _Mql(NamedTuple):
    at: datetime
    owner: str | None


class _Reached(NamedTuple):
    """A lead sales reached: the rep's calendar, and the minutes from the MQL to its first touch."""

    calendar: Calendar
    response: float


@functools.cache
def _rules() -> Rules:
    return load_rules()


def _owners() -> list[str]:
    handoff = _rules().handoff
    return sorted(handoff.owners) if handoff is not None else []


def _team_of(owner_id: str) -> str | None:
    handoff = _rules().handoff
    queues = handoff.queues if handoff is not None else ()
    return next((queue.id for queue in queues if owner_id in queue.owners), None)


@functools.cache
def rep_calendar(owner_id: str) -> Calendar:
    """When an owner of the default rules works as a rep: their hours, less their holidays
    and their vacation (`REPS`)."""
    handoff = _rules().handoff
    assert handoff is not None, "the default rules have a [handoff]"
    calendar = handoff.owners[owner_id].calendar
    vacation = REPS.get(owner_id, _ANY_REP).vacation
    return calendar._replace(holidays=calendar.holidays | frozenset(vacation))


def _occurred_at(event: dict[str, Any]) -> datetime:
    at: datetime = event["occurred_at"]
    return at


def _uuid4(bits: int) -> str:
    """`str(uuid.UUID(int=bits, version=4))`, in a third of the time (an id per event)."""
    text = f"{(bits & _UUID4_KEPT) | _UUID4_SET:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


_UUID4_KEPT: Final = ~((0xC000 << 48) | (0xF000 << 64))
_UUID4_SET: Final = (0x8000 << 48) | (4 << 76)
"""The variant (RFC 4122) and version (4) bits."""


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
