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


def _other_value(kind: object, default: object) -> tuple[str, object]:
    """An environment string for a setting of type `kind`, and the value it must become."""
    origin = getattr(kind, "__origin__", None)
    if kind is bool:
        return ("false", False) if default else ("true", True)
    if kind is int:
        value = 1 << 21 if not isinstance(default, int) or default != 1 << 21 else 1 << 22
        return str(value), value
    if kind is float:
        return "7.5", 7.5
    if kind is str:
        return "from-env", "from-env"
    if origin is list:
        return "a,b", ["a", "b"]
    if origin is dict:
        return '{"k": "v"}', {"k": "v"}
    raise AssertionError(f"no test value for {kind!r}")


def test_every_setting_is_reachable_from_the_environment() -> None:
    """Walks the settings type itself (issue 14: `EDGESIDE_PROTOCOL_MEMO=false` was ignored):
    each field, nested ones too, set from its documented variable, lands in the settings."""
    import msgspec

    from server.config import Settings, env_names

    names = env_names()
    assert "EDGESIDE_PROTOCOL_MEMO" in names and "EDGESIDE_LIVE__MAP_SIZE_MB" in names
    defaults = msgspec.to_builtins(Settings())
    skip = {"EDGESIDE_CONFIG", "EDGESIDE_PULL", "EDGESIDE_LIVE__STAMP_SLOTS", "EDGESIDE_WORKERS"}
    # The byte budget's shares must stay ordered: each is checked below with a value that is.
    budget = {
        "EDGESIDE_LIVE__BUDGET_LOW_PCT": "50",
        "EDGESIDE_LIVE__BUDGET_HIGH_PCT": "70",
        "EDGESIDE_LIVE__BUDGET_WITHDRAWAL_PCT": "90",
    }
    skip |= set(budget)
    checked = 0
    for env_name, path in names.items():
        if env_name in skip:
            continue
        kind: object = Settings
        default: object = defaults
        for step in path:
            fields = msgspec.structs.fields(kind)  # type: ignore[arg-type]
            kind = next(f.type for f in fields if f.name == step)
            default = default[step]  # type: ignore[index]
        raw, want = _other_value(kind, default)
        settings = load_settings(environ={env_name: raw})
        got: object = settings
        for step in path:
            got = getattr(got, step)
        assert got == want, (env_name, raw, got)
        checked += 1
    assert checked >= 50, checked
    assert load_settings(environ={"EDGESIDE_PROTOCOL_MEMO": "false"}).protocol_memo is False
    assert load_settings(environ={"EDGESIDE_LIVE__STAMP_SLOTS": "1024"}).live.stamp_slots == 1024
    for env_name, raw in budget.items():
        got = getattr(load_settings(environ={env_name: raw}).live, names[env_name][1])
        assert got == float(raw), env_name
    with pytest.raises(ConfigError, match="budget_low_pct < budget_high_pct"):
        load_settings(environ={"EDGESIDE_LIVE__BUDGET_HIGH_PCT": "99"})
    assert load_settings(environ={"EDGESIDE_PULL": "rules=http://x/a"}).pull == ["rules=http://x/a"]
    with pytest.raises(ConfigError, match="EDGESIDE_PROTOCOL_MEMO"):
        load_settings(environ={"EDGESIDE_PROTOCOL_MEMO": "perhaps"})
