"""Settings precedence: defaults < ALLINONE_* environment < explicit arguments."""

import pytest

from app.config import load_settings
from app.errors import AllInOneError


def test_defaults_are_sane(monkeypatch):
    monkeypatch.delenv("ALLINONE_N_CTX", raising=False)
    settings = load_settings()
    assert settings.n_ctx == 2048
    assert 1 <= settings.n_threads <= 4
    assert settings.prompts.name == "prompts.yaml"


def test_environment_overrides_default_and_argument_overrides_environment(monkeypatch):
    monkeypatch.setenv("ALLINONE_N_CTX", "1024")
    assert load_settings().n_ctx == 1024
    assert load_settings(n_ctx=512).n_ctx == 512
    assert load_settings(n_ctx=None).n_ctx == 1024  # an unset flag does not hide the env


def test_bad_value_names_the_setting(monkeypatch):
    monkeypatch.setenv("ALLINONE_N_THREADS", "lots")
    with pytest.raises(AllInOneError, match="n_threads"):
        load_settings()


def test_out_of_range_value_is_refused():
    with pytest.raises(AllInOneError, match="n_ctx"):
        load_settings(n_ctx=10)
