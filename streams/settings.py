"""leadflow's one settings object, read from `LEADFLOW_*` environment variables.

Nested sections use a double underscore: `LEADFLOW_KAFKA__BOOTSTRAP_SERVERS=broker:9092`.
Secrets are `SecretStr`: they print as `**********` and are only revealed where a client needs them.
Nothing else in leadflow reads the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.codecs import DEFAULT_MAX_EVENT_BYTES


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Settings(BaseSettings):
    """Every setting leadflow has. Build it once at start-up and pass it down."""

    model_config = SettingsConfigDict(
        env_prefix="LEADFLOW_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    rules_file: Path | None = Field(
        default=None, description="Rules file (TOML); the shipped default rules when unset."
    )
    max_event_bytes: Annotated[int, Field(gt=0)] = Field(
        default=DEFAULT_MAX_EVENT_BYTES,
        description="Larger input messages go to the dead-letter topic.",
    )
