"""Benchmarks: `python -m bench NAME [--quick]` prints figures against a baseline run."""

from __future__ import annotations

from streams.common.settings import TopicSettings


def topics_named(name: str) -> TopicSettings:
    """Every topic renamed under `name`, so that a run shares nothing with another on a broker."""
    defaults = TopicSettings().model_dump()
    return TopicSettings(
        **{
            field: value.replace("leadflow.", f"{name}.", 1)
            for field, value in defaults.items()
            if isinstance(value, str)
        }
    )
