"""Lead ids reach ClickHouse as keyed hashes unless the operator opts in."""

from __future__ import annotations

import pytest

from projections.privacy import lead_id_for_storage
from streams.common.settings import PrivacySettings
from streams.errors import LeadflowError


def test_lead_ids_become_stable_keyed_hashes() -> None:
    stored = lead_id_for_storage(PrivacySettings(hash_key="k1"))
    assert stored("ana@example.com") == stored("ana@example.com")
    assert len(stored("ana@example.com")) == 32 and "ana" not in stored("ana@example.com")
    assert stored("ana@example.com") != stored("bob@example.com")
    other_key = lead_id_for_storage(PrivacySettings(hash_key="k2"))
    assert other_key("ana@example.com") != stored("ana@example.com")


def test_clear_ids_only_when_the_operator_opts_in() -> None:
    stored = lead_id_for_storage(PrivacySettings(clear_identifiers=True))
    assert stored("ana@example.com") == "ana@example.com"
    with pytest.raises(LeadflowError, match="LEADFLOW_PRIVACY__HASH_KEY"):
        lead_id_for_storage(PrivacySettings())
