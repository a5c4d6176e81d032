"""Who owns a lead: one of a queue's owners, chosen by weighted rendezvous hashing on the
lead's id. Pure and deterministic, no I/O, and no counter shared across partitions: the same
lead gets the same owner in every process and every replay.

Each available owner scores `-weight / ln(u)`, `u` a uniform draw in (0, 1) made from a hash
of (lead, owner); the highest score wins. Over many leads each owner gets a share proportional
to their weight, and when an owner is away (or joins), only the leads that owner would win
move: nobody else's leads change hands.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import NamedTuple


class Candidate(NamedTuple):
    """An owner of a queue as routing reads them."""

    owner_id: str
    weight: float
    away: bool = False


def pick_owner(lead_id: str, owners: Sequence[Candidate]) -> str | None:
    """The owner who gets `lead_id` among `owners` (not away, weight > 0); None if none can."""
    best: str | None = None
    best_score = -math.inf
    for owner_id, weight, away in owners:
        if away or weight <= 0:
            continue
        score = -weight / math.log(_uniform(lead_id, owner_id))
        if score > best_score or (score == best_score and best is not None and owner_id < best):
            best, best_score = owner_id, score
    return best


def _uniform(lead_id: str, owner_id: str) -> float:
    """A draw in (0, 1), the same for the same lead and owner everywhere."""
    digest = hashlib.blake2b(f"{lead_id}\x1f{owner_id}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / 2.0**64
