"""An online W&B run without credentials falls back to offline before any work, saying so once;
credentials in the environment or the netrc file keep it online. No request leaves the machine."""

from __future__ import annotations

import logging
import socket

import pytest
from wandb.sdk import wandb_setup
from wandb.sdk.lib.wbauth import authenticate

from helpers.configs import fast_config
from vilt_lab.config.errors import UserError
from vilt_lab.config.schema import LoggerSchema
from vilt_lab.train import run
from vilt_lab.training.wandb_credentials import offline_without_credentials

KEY = "k" * 40  # W&B's key format: 40 characters or more
WANDB_VARIABLES = ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL", "WANDB_MODE", "NETRC")


@pytest.fixture(autouse=True)
def machine_without_credentials(monkeypatch, tmp_path):
    """A home without netrc or W&B settings, no W&B variables, a fresh W&B settings singleton
    (it reads the environment once) and no session credentials."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    for name in (*WANDB_VARIABLES, "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(wandb_setup, "_singleton", None)
    monkeypatch.setattr(authenticate, "_session_auth", None)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the credentials check opened a connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def logger(mode: str) -> LoggerSchema:
    return LoggerSchema(mode=mode, project="vilt_lab")


def test_a_key_in_the_environment_keeps_online(monkeypatch, caplog, no_network):
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    online = logger("online")
    assert offline_without_credentials(online) is online
    assert not caplog.records


def test_a_netrc_entry_keeps_online(tmp_path, caplog, no_network):
    netrc = tmp_path / ".netrc"
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {KEY}\n")
    netrc.chmod(0o600)
    online = logger("online")
    assert offline_without_credentials(online) is online
    assert not caplog.records


def test_no_credentials_fall_back_to_offline_with_one_warning_naming_the_fixes(caplog, no_network):
    with caplog.at_level(logging.WARNING):
        chosen = offline_without_credentials(logger("online"))
    assert chosen == logger("offline")
    [warning] = caplog.records
    assert warning.levelno == logging.WARNING
    for fix in ("`wandb login`", "WANDB_API_KEY=", "logger.mode=offline|disabled"):
        assert fix in warning.getMessage()


def test_only_the_first_process_of_a_machine_warns(monkeypatch, caplog, no_network):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with caplog.at_level(logging.WARNING):
        assert offline_without_credentials(logger("online")).mode == "offline"
    assert not caplog.records


@pytest.mark.parametrize("mode", ["offline", "disabled"])
def test_offline_and_disabled_are_left_alone(monkeypatch, mode, caplog, no_network):
    monkeypatch.setenv("WANDB_API_KEY", "malformed")  # not even read
    given = logger(mode)
    assert offline_without_credentials(given) is given
    assert not caplog.records


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [("WANDB_API_KEY", "short", "WANDB_API_KEY invalid"), ("WANDB_MODE", "", r"Settings\s+mode\s")],
    ids=["malformed key", "empty WANDB_MODE"],
)
def test_what_wandb_would_refuse_is_a_user_error_naming_the_fix(
    monkeypatch, variable, value, said, no_network
):
    monkeypatch.setenv(variable, value)
    with pytest.raises(UserError, match=rf"(?s){said}.*wandb login.*logger\.mode=offline\|disabled"):
        offline_without_credentials(logger("online"))


@pytest.mark.slow
def test_an_online_run_without_credentials_trains_offline(shapes_world, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="vilt_lab.wandb"):
        run(fast_config(shapes_world, tmp_path / "runs", "logger.mode=online"))
    assert any("W&B has no credentials" in message for message in caplog.messages)
    assert len(list((tmp_path / "runs" / "demo" / "wandb").glob("offline-run-*"))) == 1
