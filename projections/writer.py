"""Inserts of funnel rows into ClickHouse (the rows come from `projections.rows`).

The tables are ReplacingMergeTree keyed by `change_id` / `event_id` / (`account_id`, `lead_id`)
/ `handoff_id` / `spend_id` and every view reads them with FINAL, so writing a row twice (a
redelivery, a replay, a rebuild) never counts it twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from projections.rows import (
    ACCOUNT_CHANGES,
    ACCOUNT_MEMBERS,
    CAMPAIGN_SPEND,
    CHALLENGER_STAGE_CHANGES,
    EVENTS,
    HANDOFF_EVENTS,
    STAGE_CHANGES,
    TABLES,
    Table,
)


class ProjectionWriter:
    """Inserts rows into the funnel tables of one database."""

    def __init__(self, client: Any, database: str) -> None:
        self.client = client
        self.database = database

    def write(
        self,
        stage_changes: Sequence[list[Any]],
        events: Sequence[list[Any]],
        account_changes: Sequence[list[Any]] = (),
        account_members: Sequence[list[Any]] = (),
        challenger_changes: Sequence[list[Any]] = (),
        handoff_events: Sequence[list[Any]] = (),
        spend: Sequence[list[Any]] = (),
    ) -> None:
        """Insert every kind of row; each insert is one block (all or nothing)."""
        for table, rows in (
            (STAGE_CHANGES, stage_changes),
            (EVENTS, events),
            (ACCOUNT_CHANGES, account_changes),
            (ACCOUNT_MEMBERS, account_members),
            (CHALLENGER_STAGE_CHANGES, challenger_changes),
            (HANDOFF_EVENTS, handoff_events),
            (CAMPAIGN_SPEND, spend),
        ):
            if rows:
                self._insert(table, rows)

    def truncate(self) -> None:
        """Empty every table the projector writes (for `leadflow rebuild`)."""
        for table in TABLES:
            self.client.command(f"TRUNCATE TABLE {self.database}.{table.name}")

    def _insert(self, table: Table, rows: Sequence[list[Any]]) -> None:
        self.client.insert(f"{self.database}.{table.name}", rows, column_names=table.columns)
