"""Settings resolve from defaults < config file < environment < command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import (
    ConfigError,
    load_secrets,
    load_settings,
    settings_from_env,
    settings_to_env,
)


def test_defaults() -> None:
    settings = load_settings(environ={})
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8080, 1)
    assert settings.cookie.name == "edgeside_id"


def test_precedence(tmp_path: Path) -> None:
    config = tmp_path / "edgeside.yaml"
    config.write_text("port: 9000\nworkers: 3\ncookie: {name: vid}\nconsent: {default: false}\n")
    env = {"EDGESIDE_CONFIG": str(config), "EDGESIDE_WORKERS": "2"}
    settings = load_settings({"workers": None, "host": "0.0.0.0"}, environ=env)
    assert settings.port == 9000  # file
    assert settings.workers == 2  # environment beats file
    assert settings.host == "0.0.0.0"  # command line beats all
    assert settings.cookie.name == "vid"
    assert settings.consent.default is False
    assert load_settings({"workers": 4}, environ=env).workers == 4


def test_unknown_keys_and_wrong_types_are_named(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("limits: {max_body_bytes: lots}\n")
    with pytest.raises(ConfigError, match=r"max_body_bytes"):
        load_settings({"config": str(config)}, environ={})
    config.write_text("prot: 80\n")
    with pytest.raises(ConfigError, match="prot"):
        load_settings({"config": str(config)}, environ={})
    with pytest.raises(ConfigError, match="EDGESIDE_PORT"):
        load_settings(environ={"EDGESIDE_PORT": "eighty"})


def test_settings_travel_to_workers_without_secrets() -> None:
    env = {"EDGESIDE_ADMIN_TOKEN": "s3cret", "EDGESIDE_PORT": "9100"}
    blob = settings_to_env(load_settings(environ=env))
    assert "s3cret" not in blob
    restored = settings_from_env({"EDGESIDE_SETTINGS_JSON": blob})
    assert restored.port == 9100
    secrets = load_secrets(env)
    assert secrets.admin_token == "s3cret"
    assert "s3cret" not in repr(secrets)


def test_stamp_slots_must_be_a_power_of_two(tmp_path: Path) -> None:
    config = tmp_path / "edgeside.yaml"
    config.write_text("live: {stamp_slots: 1000}\n")
    with pytest.raises(ConfigError, match="stamp_slots 1000: a power of two"):
        load_settings({"config": str(config)}, environ={})
    config.write_text("live: {stamp_slots: 4096}\n")
    assert load_settings({"config": str(config)}, environ={}).live.stamp_slots == 4096
