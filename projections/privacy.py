"""Direct identifiers never reach ClickHouse in clear unless the operator opts in.

Lead ids are often emails or CRM contact ids. The projector replaces each with a keyed hash
(HMAC-SHA256 with `LEADFLOW_PRIVACY__HASH_KEY`, 128 bits, hex): stable, so every per-lead view
still works, and not reversible without the key. `LEADFLOW_PRIVACY__CLEAR_IDENTIFIERS=true`
stores them as they are.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from streams.common.settings import PrivacySettings
from streams.errors import LeadflowError


def lead_id_for_storage(privacy: PrivacySettings) -> Callable[[str], str]:
    """The function that turns a lead id into what ClickHouse stores."""
    if privacy.clear_identifiers:
        return lambda lead_id: lead_id
    if privacy.hash_key is None:
        raise LeadflowError(
            "set LEADFLOW_PRIVACY__HASH_KEY (lead ids are stored as keyed hashes), or opt in "
            "to clear lead ids with LEADFLOW_PRIVACY__CLEAR_IDENTIFIERS=true"
        )
    key = privacy.hash_key.get_secret_value().encode()

    def keyed_hash(lead_id: str) -> str:
        return hmac.new(key, lead_id.encode(), hashlib.sha256).hexdigest()[:32]

    return keyed_hash
