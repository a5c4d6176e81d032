"""The input contract: one JSON object per Kafka message on the events topic, keyed by `lead_id`.

Every event shares the envelope (`event_id`, `lead_id`, `type`, `occurred_at`, `source`,
`campaign`, `properties`); `type` selects the model of `properties`. Unknown envelope fields are
ignored and extra properties are kept, so upstream systems can send more than leadflow reads.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Final, Literal, Self, TypeAlias

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from schemas.countries import COUNTRY_DESCRIPTION, COUNTRY_EXAMPLES, CountryCode

EngagementType: TypeAlias = Literal[
    "page_view",
    "pricing_page_view",
    "content_download",
    "newsletter_subscribe",
    "webinar_registered",
    "webinar_attended",
    "email_open",
    "email_click",
    "social_engagement",
    "free_trial_signup",
    "demo_request",
    "contact_sales_request",
    "unsubscribe",
    "email_bounced",
]
SalesType: TypeAlias = Literal[
    "sales_contacted",
    "sales_disqualified",
    "quote_requested",
    "deal_won",
    "deal_lost",
    "advocacy",
    "lead_recycled",
    "leads_merged",
    "sales_attempted",
    "owner_assigned",
]
IdentityType: TypeAlias = Literal["identity_linked"]
DisqualificationReason: TypeAlias = Literal[
    "competitor",
    "student",
    "vendor",
    "no_budget",
    "no_authority",
    "no_need",
    "no_timeline",
    "invalid_contact",
    "other",
]
AdvocacyKind: TypeAlias = Literal["testimonial", "review", "backlink", "referral"]

ENGAGEMENT_TYPES: Final[tuple[str, ...]] = EngagementType.__args__  # type: ignore[attr-defined]
SALES_TYPES: Final[tuple[str, ...]] = SalesType.__args__  # type: ignore[attr-defined]
PROFILE_TYPES: Final[tuple[str, ...]] = ("profile_updated",)
IDENTITY_TYPES: Final[tuple[str, ...]] = IdentityType.__args__  # type: ignore[attr-defined]
HANDOFF_TYPES: Final[tuple[str, ...]] = ("sales_attempted", "owner_assigned")
"""Sales types that only the handoff reads (an attempt to reach the lead, the CRM's owner): they
move no stage and are not part of the lead's scored history (docs/handoff.md)."""
LINK_TYPES: Final[tuple[str, ...]] = ("identity_linked", "leads_merged")
"""The types that link one identity to a known lead (docs/rules.md, identity stitching)."""
EVENT_TYPES: Final[tuple[str, ...]] = (
    PROFILE_TYPES + ENGAGEMENT_TYPES + SALES_TYPES + IDENTITY_TYPES
)

EARLIEST_EVENT_TIME: Final = datetime(1970, 1, 1, tzinfo=UTC)
"""The earliest valid `occurred_at` (included)."""
LATEST_EVENT_TIME: Final = datetime(2100, 1, 1, tzinfo=UTC)
"""The first `occurred_at` past the valid range (excluded). Wider than any engagement leadflow
will see, narrower than what breaks: every instant in range converts to microseconds and back,
to ClickHouse's DateTime64 and to ISO text in any offset."""


EventTime = Annotated[
    AwareDatetime,
    # Compared as instants: 9999-12-31T23:59:59-01:00 is past year 9999 in UTC.
    Field(
        ge=EARLIEST_EVENT_TIME,
        lt=LATEST_EVENT_TIME,
        description="When it happened, with an offset; from 1970-01-01T00:00:00Z up to "
        "(not including) 2100-01-01T00:00:00Z.",
    ),
]
"""An event's time: aware, and within [EARLIEST_EVENT_TIME, LATEST_EVENT_TIME)."""

Identifier = Annotated[str, Field(min_length=1, max_length=256)]
Label = Annotated[str, Field(min_length=1, max_length=256)]


class _Properties(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")


class EngagementProperties(_Properties):
    """Behaviour details; `content_category` selects category points from the rules file."""

    content_category: Label | None = None
    url: Annotated[str, Field(max_length=4096)] | None = None


class ProfileProperties(_Properties):
    """Profile facts; only the fields present in an event change the lead's profile."""

    email: Annotated[str, Field(max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")] | None = None
    job_title: Label | None = None
    seniority: Label | None = None
    company: Label | None = None
    company_size: Annotated[int, Field(ge=0, le=10_000_000)] | None = None
    industry: Label | None = None
    country: CountryCode | None = Field(
        default=None, description=COUNTRY_DESCRIPTION, examples=COUNTRY_EXAMPLES
    )
    account_id: Identifier | None = None
    """The person's account (company) in the CRM, when upstream knows it; otherwise leadflow
    names the account by the email's domain."""


class Bant(BaseModel):
    """Sales' qualification answers: budget, authority, need, timeline (None = not asked)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    budget: bool | None = None
    authority: bool | None = None
    need: bool | None = None
    timeline: bool | None = None


class SalesContactedProperties(_Properties):
    channel: Label | None = None
    bant: Bant | None = None


class SalesAttemptedProperties(_Properties):
    channel: Label | None = None
    """How sales tried (call, email, meeting...): a try that reached no one."""


class OwnerAssignedProperties(_Properties):
    owner_id: Identifier
    """The CRM's owner of the lead; it replaces the owner the rules' routing chose."""
    team: Label | None = None


class SalesDisqualifiedProperties(_Properties):
    reason: DisqualificationReason


class DealWonProperties(_Properties):
    amount: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]


class DealLostProperties(_Properties):
    reason: Label | None = None


class AdvocacyProperties(_Properties):
    kind: AdvocacyKind


class IdentityLinkedProperties(_Properties):
    """None read; the identity is the event's `anonymous_id`."""


class LeadsMergedProperties(_Properties):
    merged_lead_id: Identifier
    """The duplicate merged into `lead_id`, the lead that stays."""


class _Envelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: Identifier
    lead_id: Identifier
    occurred_at: EventTime
    source: Label | None = None
    campaign: Label | None = None
    anonymous_id: Identifier | None = Field(
        default=None,
        description="The tracker's anonymous id the event was seen under. Equal to lead_id: "
        "the visitor is not identified yet (its events are kept under that id, which publishes "
        "no stage changes). Another id: the event is lead_id's, and links that anonymous id "
        "to lead_id (as identity_linked does).",
    )


class EngagementEvent(_Envelope):
    """Marketing engagement seen by web analytics, email and webinar tools."""

    type: EngagementType
    properties: EngagementProperties = EngagementProperties()


class ProfileUpdated(_Envelope):
    """Profile facts about the person (job title, company size...)."""

    type: Literal["profile_updated"]
    properties: ProfileProperties


class SalesContacted(_Envelope):
    """Sales talked to the lead; `bant` keeps the qualification answers."""

    type: Literal["sales_contacted"]
    properties: SalesContactedProperties = SalesContactedProperties()


class SalesAttempted(_Envelope):
    """Sales tried to reach the lead (a call, an email) and reached no one: it starts the
    response time of an MQL without being a contact (docs/handoff.md)."""

    type: Literal["sales_attempted"]
    properties: SalesAttemptedProperties = SalesAttemptedProperties()


class OwnerAssigned(_Envelope):
    """The CRM assigned the lead to an owner: the handoff follows it rather than the routing
    rules (sales group: CRM only)."""

    type: Literal["owner_assigned"]
    properties: OwnerAssignedProperties


class SalesDisqualified(_Envelope):
    type: Literal["sales_disqualified"]
    properties: SalesDisqualifiedProperties


class QuoteRequested(_Envelope):
    type: Literal["quote_requested"]
    properties: _Properties = _Properties()


class DealWon(_Envelope):
    type: Literal["deal_won"]
    properties: DealWonProperties


class DealLost(_Envelope):
    type: Literal["deal_lost"]
    properties: DealLostProperties = DealLostProperties()


class Advocacy(_Envelope):
    type: Literal["advocacy"]
    properties: AdvocacyProperties


class LeadRecycled(_Envelope):
    """Sales sends a disqualified lead back to marketing nurture."""

    type: Literal["lead_recycled"]
    properties: _Properties = _Properties()


class IdentityLinked(_Envelope):
    """The tracker's `anonymous_id` (required here) is the known lead `lead_id`: the
    visitor's engagement and first touch count for the lead (Segment's `alias`: `previousId`
    is the anonymous id, `userId` the lead). Keyed by `lead_id`, like every event."""

    type: Literal["identity_linked"]
    properties: IdentityLinkedProperties = IdentityLinkedProperties()

    @model_validator(mode="after")
    def _another_identity(self) -> Self:
        if self.anonymous_id is None or self.anonymous_id == self.lead_id:
            raise ValueError("identity_linked needs an anonymous_id other than its lead_id")
        return self


class LeadsMerged(_Envelope):
    """The CRM merged the duplicate `merged_lead_id` into `lead_id`, the lead that stays
    (sales group: CRM only). The duplicate's changes are retracted and its engagement counts
    for the survivor. Keyed by `lead_id`, the survivor."""

    type: Literal["leads_merged"]
    properties: LeadsMergedProperties

    @model_validator(mode="after")
    def _another_lead(self) -> Self:
        if self.properties.merged_lead_id == self.lead_id:
            raise ValueError("merged_lead_id must name another lead than lead_id")
        return self


Event: TypeAlias = Annotated[
    EngagementEvent
    | ProfileUpdated
    | SalesContacted
    | SalesAttempted
    | OwnerAssigned
    | SalesDisqualified
    | QuoteRequested
    | DealWon
    | DealLost
    | Advocacy
    | LeadRecycled
    | LeadsMerged
    | IdentityLinked,
    Field(discriminator="type"),
]
"""Any leadflow event, discriminated by `type`."""

EVENT_ADAPTER: Final[TypeAdapter[Event]] = TypeAdapter(Event)

EVENT_MODELS: Final[tuple[type[BaseModel], ...]] = (
    EngagementEvent,
    ProfileUpdated,
    SalesContacted,
    SalesAttempted,
    OwnerAssigned,
    SalesDisqualified,
    QuoteRequested,
    DealWon,
    DealLost,
    Advocacy,
    LeadRecycled,
    LeadsMerged,
    IdentityLinked,
)
