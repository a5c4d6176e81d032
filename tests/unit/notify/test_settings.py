"""`leadflow notify`'s settings: read from LEADFLOW_NOTIFY__*, a bad one stops the start in one
line."""

from __future__ import annotations

import pytest

from streams.common.settings import (
    NotifySettings,
    Settings,
    SettingsError,
    environment_of,
    load_settings,
)
from streams.errors import LeadflowError
from streams.notify.notifier import check_can_start
from tests.support.command_line import leadflow


def test_webhooks_come_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADFLOW_NOTIFY__URLS", '["https://a.example/hook"]')
    monkeypatch.setenv("LEADFLOW_NOTIFY__ENDPOINTS", '{"touched": ["http://b.example:8080/t"]}')
    monkeypatch.setenv("LEADFLOW_NOTIFY__SECRET", "s3cret")
    monkeypatch.setenv("LEADFLOW_NOTIFY__BODY_FORMAT", "slack")
    notify = load_settings().notify
    assert notify.urls == ("https://a.example/hook",)
    assert notify.endpoints == (("touched", ("http://b.example:8080/t",)),)
    assert notify.body_format == "slack"
    assert "s3cret" not in repr(notify)


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("LEADFLOW_NOTIFY__URLS", '["ftp://a.example/"]', "'ftp://a.example/' is not an http(s)"),
        ("LEADFLOW_NOTIFY__URLS", '["https://"]', "is not an http(s) URL"),
        ("LEADFLOW_NOTIFY__ENDPOINTS", '{"won": ["https://a.example/"]}', "unknown kind 'won'"),
        ("LEADFLOW_NOTIFY__ENDPOINTS", '{"breached": ["a.example"]}', "breached: 'a.example'"),
        ("LEADFLOW_NOTIFY__KINDS", '["lost"]', "LEADFLOW_NOTIFY__KINDS"),
        ("LEADFLOW_NOTIFY__BODY_FORMAT", "xml", "LEADFLOW_NOTIFY__BODY_FORMAT"),
        ("LEADFLOW_NOTIFY__MAX_ATTEMPTS", "0", "LEADFLOW_NOTIFY__MAX_ATTEMPTS"),
        ("LEADFLOW_NOTIFY__BACKOFF_BASE", "120", "backoff_base (120.0) is above backoff_cap"),
        ("LEADFLOW_NOTIFY__URLS", "https://a.example/", "a list or mapping setting takes JSON"),
    ],
)
def test_a_bad_setting_fails_in_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, says: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as failure:
        load_settings()
    message = str(failure.value)
    assert "\n" not in message
    assert says in message


def test_the_notifier_needs_a_webhook_and_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(LeadflowError, match="set LEADFLOW_NOTIFY__URLS"):
        check_can_start(load_settings())
    monkeypatch.setenv("LEADFLOW_NOTIFY__URLS", '["https://a.example/hook"]')
    with pytest.raises(LeadflowError, match="set LEADFLOW_NOTIFY__SECRET"):
        check_can_start(load_settings())
    monkeypatch.setenv("LEADFLOW_NOTIFY__SECRET", "s3cret")
    check_can_start(load_settings())


def test_leadflow_notify_without_webhooks_stops_with_one_line_before_the_broker() -> None:
    # No broker listens on port 1: the command must stop before it asks one anything.
    result = leadflow("notify", variables={"LEADFLOW_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: set LEADFLOW_NOTIFY__URLS"), lines


def test_another_process_gets_the_same_webhooks(monkeypatch: pytest.MonkeyPatch) -> None:
    # `leadflow worker --processes N` starts its processes with environment_of(settings).
    notify = NotifySettings(
        urls=("https://a.example/hook",),
        endpoints={"withdrawn": ("https://c.example/",), "touched": ("https://b.example/",)},
        secret="s3cret",
    )
    original = Settings(notify=notify)
    assert hash(original) == hash(Settings(notify=notify))
    for name, value in environment_of(original).items():
        monkeypatch.setenv(name, value)
    assert load_settings() == original
