"""Joining a Ray cluster that expects token auth says what to set (the bare Ray error does not)."""

import pytest

from openvica_sim import distributed


@pytest.fixture
def refused(tmp_path, monkeypatch):
    """A home folder without a Ray token, no RAY_AUTH_* settings, and a ray.init that is refused as Ray refuses."""
    def init(**kwargs):
        raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379")

    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(distributed.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.ray, "init", init)
    return tmp_path


def _token(home):
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text("secret")


def test_a_refused_connection_on_a_machine_with_a_ray_token_names_ray_auth_mode(refused):
    _token(refused)
    with pytest.raises(ConnectionError, match=r"10\.0\.0\.1:6379.*RAY_AUTH_MODE=token"):
        distributed.connect("10.0.0.1:6379")


def test_without_a_token_or_with_ray_auth_mode_set_the_error_is_rays_own(refused, monkeypatch):
    with pytest.raises(ConnectionError, match=r"^Failed to connect to Ray cluster at 10\.0\.0\.1:6379$"):
        distributed.connect("10.0.0.1:6379")
    _token(refused)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert distributed.auth_hint() is None
