"""Which GGUF gets loaded: --model / ALLINONE_MODEL, else default, else any catalogued one."""

import pytest

from app.config import load_settings
from app.errors import ModelNotFound
from app.models import load_catalog, resolve_model_path


@pytest.fixture
def catalog():
    return load_catalog()


def gguf(path):
    path.write_bytes(b"GGUF" + b"\0" * 16)
    return path


def test_explicit_path_wins(tmp_path, catalog):
    path = gguf(tmp_path / "mine.gguf")
    assert (
        resolve_model_path(load_settings(model=str(path), models_dir=tmp_path / "m"), catalog)
        == path
    )


def test_environment_variable_is_used(tmp_path, monkeypatch, catalog):
    path = gguf(tmp_path / "env.gguf")
    monkeypatch.setenv("ALLINONE_MODEL", str(path))
    assert resolve_model_path(load_settings(models_dir=tmp_path), catalog) == path


def test_default_model_preferred_over_others(tmp_path, catalog):
    default = gguf(tmp_path / catalog.models[catalog.default].file)
    for model in catalog.models.values():
        gguf(tmp_path / model.file)
    assert resolve_model_path(load_settings(models_dir=tmp_path), catalog) == default


def test_any_catalogued_model_when_default_missing(tmp_path, catalog):
    other = next(m for m in catalog.models.values() if m.name != catalog.default)
    path = gguf(tmp_path / other.file)
    assert resolve_model_path(load_settings(models_dir=tmp_path), catalog) == path


def test_nothing_downloaded_prints_the_download_command(tmp_path, monkeypatch, catalog):
    monkeypatch.delenv("ALLINONE_MODEL", raising=False)
    with pytest.raises(ModelNotFound, match="allinone download"):
        resolve_model_path(load_settings(models_dir=tmp_path), catalog)


def test_catalog_name_not_downloaded_names_the_exact_command(tmp_path, catalog):
    with pytest.raises(ModelNotFound, match=f"--model {catalog.default}"):
        resolve_model_path(load_settings(model=catalog.default, models_dir=tmp_path), catalog)


def test_missing_path_is_a_clear_error(tmp_path, catalog):
    with pytest.raises(ModelNotFound, match="not found"):
        resolve_model_path(load_settings(model=str(tmp_path / "x.gguf")), catalog)
