"""Settings read from the environment by strict helpers, and the system checks that
refuse settings which parse but cannot work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured

from controlplane.checks import check_candlecast_settings, check_deploy_secrets
from controlplane.lib.env import env_bool, env_int, env_list, env_secret, env_str

NAME = "CC_TEST_SETTING"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def env(monkeypatch):
    """Set NAME (or remove it with None); NAME_FILE starts unset."""
    monkeypatch.delenv(NAME, raising=False)
    monkeypatch.delenv(f"{NAME}_FILE", raising=False)

    def set_value(value: str | None, name: str = NAME) -> None:
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)

    return set_value


def check_ids(problems) -> list[str]:
    return [problem.id for problem in problems]


### env helpers


@pytest.mark.parametrize(
    ("value", "expected"),
    [("True", True), ("true", True), ("1", True)]
    + [("False", False), ("false", False), ("0", False)],
)
def test_it_reads_a_boolean(env, value, expected):
    env(value)
    assert env_bool(NAME, not expected) is expected


@pytest.mark.parametrize("value", [None, ""])
def test_it_falls_back_to_the_default_boolean(env, value):
    env(value)
    assert env_bool(NAME, True) is True
    assert env_bool(NAME, False) is False


@pytest.mark.parametrize("value", ["yes", "no", "TRUE", "on", " true", "2"])
def test_it_refuses_anything_else_as_a_boolean(env, value):
    env(value)
    with pytest.raises(ImproperlyConfigured) as raised:
        env_bool(NAME, False)
    assert str(raised.value) == f"{NAME} must be True or False, not {value!r}"


def test_it_reads_a_whole_number(env):
    env("-42")
    assert env_int(NAME, 7) == -42
    env("")
    assert env_int(NAME, 7) == 7
    env(None)
    assert env_int(NAME, 7) == 7


@pytest.mark.parametrize("value", ["4.5", "ten", "8MB"])
def test_it_refuses_a_number_that_is_not_whole(env, value):
    env(value)
    with pytest.raises(ImproperlyConfigured) as raised:
        env_int(NAME, 8)
    assert str(raised.value) == f"{NAME} must be a whole number, not {value!r}"


def test_it_reads_a_comma_separated_list(env):
    env(" hub.example.org, ,127.0.0.1,, localhost ")
    assert env_list(NAME, ["x"]) == ["hub.example.org", "127.0.0.1", "localhost"]
    env("")
    assert env_list(NAME, ["x"]) == ["x"]


def test_it_reads_a_string_as_given(env):
    env(" spaced ")
    assert env_str(NAME, "default") == " spaced "
    env(None)
    assert env_str(NAME, "default") == "default"


def test_it_prefers_the_secret_file(env, tmp_path):
    path = tmp_path / "secret"
    path.write_text("from-the-file\n")
    env(str(path), f"{NAME}_FILE")
    env("from-the-environment")
    assert env_secret(NAME, "default") == "from-the-file"


def test_it_reads_the_secret_from_the_variable_without_a_file(env):
    env("from-the-environment")
    assert env_secret(NAME, "default") == "from-the-environment"
    env(None)
    assert env_secret(NAME, "default") == "default"


def test_it_explains_a_secret_file_it_cannot_read(env, tmp_path):
    path = tmp_path / "missing"
    env(str(path), f"{NAME}_FILE")
    env("from-the-environment")
    with pytest.raises(ImproperlyConfigured) as raised:
        env_secret(NAME)
    assert str(raised.value).startswith(f"{NAME}_FILE={str(path)!r} cannot be read: ")
    assert "No such file or directory" in str(raised.value)


### the settings module


def load_settings(code: str, **environ: str) -> subprocess.CompletedProcess:
    """Import the settings module in a fresh interpreter with this environment."""
    clean = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "SECRET_KEY")}
    return subprocess.run(
        [sys.executable, "-c", f"import controlplane.settings as s; {code}"],
        cwd=ROOT,
        env={**clean, **environ},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_it_fails_at_start_on_a_mistyped_boolean():
    result = load_settings("print(s.DEBUG)", DEBUG="yes")
    assert result.returncode != 0
    assert "DEBUG must be True or False, not 'yes'" in result.stderr


def test_it_reads_secret_key_from_a_file(tmp_path):
    path = tmp_path / "secret_key"
    path.write_text("a-deployment-secret\n")
    result = load_settings("print(s.SECRET_KEY)", SECRET_KEY_FILE=str(path))
    assert result.stdout == "a-deployment-secret\n"


### system checks


def test_it_finds_nothing_wrong_with_the_defaults():
    assert check_candlecast_settings(None) == []


@pytest.mark.parametrize(("limit", "ids"), [(0, ["candlecast.E001"]), (1, [])])
def test_it_checks_the_lower_message_size_limit(settings, limit, ids):
    settings.CANDLECAST_MESSAGE_SIZE_LIMIT_MB = limit
    assert check_ids(check_candlecast_settings(None)) == ids


@pytest.mark.parametrize(("limit", "ids"), [(20, []), (21, ["candlecast.E001"])])
def test_it_checks_the_upper_message_size_limit(settings, limit, ids):
    settings.CANDLECAST_MESSAGE_SIZE_LIMIT_MB = limit
    assert check_ids(check_candlecast_settings(None)) == ids


def test_it_explains_the_message_size_limit(settings):
    settings.CANDLECAST_MESSAGE_SIZE_LIMIT_MB = 0
    [error] = check_candlecast_settings(None)
    assert "from 1 to 20 (MiB), as FreqTrade's message_size_limit" in error.msg


@pytest.mark.parametrize(
    ("rows", "ids"),
    [(99, ["candlecast.E002"]), (100, []), (10000, []), (10001, ["candlecast.E002"])],
)
def test_it_checks_the_snapshot_rows(settings, rows, ids):
    settings.CANDLECAST_SNAPSHOT_ROWS = rows
    assert check_ids(check_candlecast_settings(None)) == ids


@pytest.mark.parametrize(("capacity", "ids"), [(999, ["candlecast.W001"]), (1000, [])])
def test_it_warns_about_a_small_channel_capacity(settings, capacity, ids):
    settings.CHANNEL_CAPACITY = capacity
    assert check_ids(check_candlecast_settings(None)) == ids


def test_it_reports_every_problem_at_once(settings):
    settings.CANDLECAST_MESSAGE_SIZE_LIMIT_MB = 0
    settings.CANDLECAST_SNAPSHOT_ROWS = 1
    settings.CHANNEL_CAPACITY = 10
    assert check_ids(check_candlecast_settings(None)) == [
        "candlecast.E001",
        "candlecast.E002",
        "candlecast.W001",
    ]


def test_it_registers_the_checks_with_django(settings):
    settings.CANDLECAST_MESSAGE_SIZE_LIMIT_MB = 21
    assert "candlecast.E001" in check_ids(run_checks())


def test_it_flags_the_development_secret_key_for_deployment(settings):
    settings.SECRET_KEY = "candlecast-insecure-development-key-change-me"
    [error] = check_deploy_secrets(None)
    assert error.id == "candlecast.E010"
    assert "set SECRET_KEY or SECRET_KEY_FILE" in error.msg
    assert "candlecast.E010" in check_ids(run_checks(include_deployment_checks=True))
    assert "candlecast.E010" not in check_ids(run_checks())


def test_it_accepts_another_secret_key_for_deployment(settings):
    settings.SECRET_KEY = "q7Yf0v-a-real-deployment-secret-with-enough-entropy"
    assert check_deploy_secrets(None) == []
