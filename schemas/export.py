"""Write the JSON Schema of every contract model, so upstream teams can validate before sending."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from schemas.accounts import AccountChange, AccountSignal
from schemas.events import EVENT_ADAPTER, EVENT_MODELS
from schemas.handoff import HandoffEvent
from schemas.spend import CampaignSpend
from schemas.stage_changes import StageChange


def export_json_schemas(directory: Path) -> list[Path]:
    """Write `<model>.schema.json` files (plus `event.schema.json`, the union) into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    schemas: dict[str, dict[str, object]] = {"event": EVENT_ADAPTER.json_schema()}
    models: tuple[type[BaseModel], ...] = (
        *EVENT_MODELS,
        StageChange,
        AccountSignal,
        AccountChange,
        HandoffEvent,
        CampaignSpend,
    )
    for model in models:
        schemas[_file_stem(model.__name__)] = model.model_json_schema()
    written = []
    for stem, schema in schemas.items():
        path = directory / f"{stem}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written


def _file_stem(class_name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in class_name).lstrip("_")
