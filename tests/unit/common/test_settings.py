from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from streams.common.settings import (
    KafkaSettings,
    PrivacySettings,
    Settings,
    SettingsError,
    WorkerSettings,
    environment_of,
    load_settings,
    settings_reference,
)


def test_settings_come_from_leadflow_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADFLOW_KAFKA__BOOTSTRAP_SERVERS", "a:9092, b:9092")
    monkeypatch.setenv("LEADFLOW_TOPICS__PARTITIONS", "8")
    monkeypatch.setenv("LEADFLOW_WORKER__STORE", "memory")
    settings = Settings()
    assert settings.kafka.servers == ["a:9092", "b:9092"]
    assert settings.topics.partitions == 8
    assert settings.worker.store == "memory"


def test_an_unknown_variable_in_a_section_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADFLOW_WORKER__STOER", "memory")
    with pytest.raises(ValidationError, match="stoer"):
        Settings()


def test_secrets_do_not_print() -> None:
    kafka = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="PLAIN",
        sasl_username="svc",
        sasl_password="hunter2",
    )
    assert "hunter2" not in repr(kafka) and "hunter2" not in str(Settings(kafka=kafka))


def test_sasl_needs_its_credentials() -> None:
    with pytest.raises(ValidationError, match="needs sasl_mechanism"):
        KafkaSettings(security_protocol="SASL_PLAINTEXT")


def test_environment_of_rebuilds_the_same_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Settings(
        kafka=KafkaSettings(
            bootstrap_servers="k:1",
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="u",
            sasl_password="p",
        ),
        worker=WorkerSettings(data_dir=Path("/data"), fetch_max_wait=0.01, web_port=1),
        privacy=PrivacySettings(clear_identifiers=True),
        rules_file=Path("/rules.toml"),
    )
    variables = environment_of(original)
    assert variables["LEADFLOW_KAFKA__SASL_PASSWORD"] == "p"
    assert variables["LEADFLOW_WORKER__FETCH_MAX_WAIT"] == "0.01"
    assert variables["LEADFLOW_PRIVACY__CLEAR_IDENTIFIERS"] == "true"
    assert "LEADFLOW_TOPICS__EVENTS" not in variables  # defaults stay out
    for key, value in variables.items():
        monkeypatch.setenv(key, value)
    assert Settings() == original


def _fields(model: type[BaseModel], prefix: str = "LEADFLOW_") -> dict[str, FieldInfo]:
    found = {}
    for name, field_info in model.model_fields.items():
        annotation = field_info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found.update(_fields(annotation, f"{prefix}{name.upper()}__"))
        else:
            found[f"{prefix}{name.upper()}"] = field_info
    return found


def test_every_setting_says_what_it_means() -> None:
    undocumented = [name for name, info in _fields(Settings).items() if not info.description]
    assert undocumented == []


def test_the_settings_reference_is_generated_from_the_model() -> None:
    reference = settings_reference()
    for name in _fields(Settings):
        assert f"| `{name}` |" in reference
    page = Path(__file__).parents[3] / "docs" / "settings.md"
    assert page.read_text() == reference, "run `leadflow settings > docs/settings.md`"


def test_a_bad_value_fails_with_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LEADFLOW_TOPICS__PARTITIONS", "0")
    with pytest.raises(SettingsError) as failure:
        load_settings()
    message = str(failure.value)
    assert "\n" not in message
    assert message.startswith("invalid settings: LEADFLOW_TOPICS__PARTITIONS: ")


def test_a_list_setting_that_is_not_json_is_named_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADFLOW_COLLECTOR__WRITE_KEYS", "not json")
    monkeypatch.setenv("LEADFLOW_KAFKA__BOOTSTRAP_SERVERS", "localhost:9092")
    with pytest.raises(SettingsError) as failure:
        load_settings()
    assert str(failure.value).startswith(
        "invalid settings: LEADFLOW_COLLECTOR__WRITE_KEYS: a list or mapping setting takes JSON"
    )
