"""Joining a Ray cluster that expects token auth says what to set (the bare Ray error does not)."""

import pytest

from openvica_sim import distributed


def _refused(**kwargs):
    raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379")


def test_a_refused_connection_on_a_machine_with_a_ray_token_names_ray_auth_mode(tmp_path, monkeypatch):
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("secret")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    monkeypatch.setattr(distributed.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.ray, "init", _refused)
    with pytest.raises(ConnectionError, match=r"10\.0\.0\.1:6379.*RAY_AUTH_MODE=token"):
        distributed.connect("10.0.0.1:6379")


def test_without_a_token_or_with_ray_auth_mode_set_the_error_is_rays_own(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setattr(distributed.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.ray, "init", _refused)
    with pytest.raises(ConnectionError, match=r"^Failed to connect to Ray cluster at 10\.0\.0\.1:6379$"):
        distributed.connect("10.0.0.1:6379")
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("secret")
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert distributed.auth_hint() is None
