"""Ingest: copy the task's data files from their source (URL, folder or mirror) into data/raw/.

Each file is checksummed; a file whose sha256 differs from the one declared in params is refused,
and data/raw/ keeps its previous contents (files are written to a temp path, then renamed).
"""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from ml.config import Settings
from ml.errors import UserError
from ml.io import sha256_file, write_json

MANIFEST = "manifest.json"
DOWNLOAD_TIMEOUT_S = 30


class IngestError(UserError):
    """A data file could not be fetched or failed its checksum; the message says what to do."""


@dataclass(frozen=True)
class IngestedFile:
    name: str
    origin: str
    sha256: str
    bytes: int


def _is_url(location: str) -> bool:
    return location.startswith(("http://", "https://", "ftp://"))


def _fetch(origin: str, destination: Path) -> None:
    if _is_url(origin):
        try:
            with (
                urllib.request.urlopen(origin, timeout=DOWNLOAD_TIMEOUT_S) as response,
                destination.open("wb") as out,
            ):
                shutil.copyfileobj(response, out)
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise IngestError(
                f"could not download {origin}: {exc}. If this machine is offline, set "
                "ML_DATA_MIRROR to a local folder holding the same file names "
                "(for example ML_DATA_MIRROR=../shared/data/madewithml), or "
                "ML_DATA_MIRROR_ROOT=../shared/data with data.mirror_subdir in the params."
            ) from exc
    else:
        source = Path(origin)
        if not source.is_file():
            raise IngestError(
                f"data file not found: {source}. Check data.source in params.yaml or the "
                "ML_DATA_MIRROR folder; it must hold the files named by data.train_file and "
                "data.holdout_file (and data.train_labels_file, data.holdout_labels_file where "
                "the task has them)."
            )
        shutil.copyfile(source, destination)


def mirror_under_root(settings: Settings) -> Path | None:
    """This model's copy under data.mirror_root (ML_DATA_MIRROR_ROOT), or None when no root
    is set or the params name no data.mirror_subdir (a model with no copy there)."""
    root, subdir = settings.data.mirror_root, settings.data.mirror_subdir
    if not root or not subdir:
        return None
    folder = settings.path(root) / subdir
    if not folder.is_dir():
        raise IngestError(
            f"data mirror folder not found: {folder} (ML_DATA_MIRROR_ROOT={root} with "
            f"data.mirror_subdir={subdir}). Copy the model's data files into that folder, fix "
            "data.mirror_subdir in the params file, or set ML_DATA_MIRROR to the folder that "
            "holds them."
        )
    return folder


def source_location(settings: Settings) -> str:
    """Where files come from: the mirror (ML_DATA_MIRROR) when set, else this model's folder
    under the mirror root, else data.source (URL or folder)."""
    if settings.data.mirror:
        return str(settings.path(settings.data.mirror))
    folder = mirror_under_root(settings)
    if folder is not None:
        return str(folder)
    if _is_url(settings.data.source):
        return settings.data.source.rstrip("/")
    return str(settings.path(settings.data.source))


def ingest(settings: Settings) -> list[IngestedFile]:
    """Fetch the task's source files into data/raw/ and write a checksum manifest."""
    from ml.tasks import task_of

    location = source_location(settings)
    raw_dir = settings.path(settings.data.raw_dir)
    names = task_of(settings).source_files(settings)
    if len(set(names)) != len(names):
        raise IngestError(
            f"the data files (data.train_file, data.holdout_file and their label files) must "
            f"differ, got {names}"
        )

    raw_dir.mkdir(parents=True, exist_ok=True)
    staged: dict[Path, Path] = {}  # temp file -> final path
    files: list[IngestedFile] = []
    try:
        for name in names:
            origin = f"{location}/{name}" if _is_url(location) else str(Path(location) / name)
            tmp = raw_dir / f".{name}.partial"
            staged[tmp] = raw_dir / name
            _fetch(origin, tmp)
            digest = sha256_file(tmp)
            expected = settings.data.sha256.get(name)
            if expected and expected.lower() != digest:
                raise IngestError(
                    f"checksum mismatch for {name} from {origin}: expected {expected}, got "
                    f"{digest}. The source changed or the mirror holds another file; fix the "
                    "source, or update data.sha256 in params.yaml if the change is intended."
                )
            files.append(IngestedFile(name, origin, digest, tmp.stat().st_size))
        # Every file fetched and verified: only now replace what data/raw/ held.
        for tmp, target in staged.items():
            tmp.replace(target)
    finally:
        for tmp in staged:
            tmp.unlink(missing_ok=True)

    write_json(raw_dir / MANIFEST, {"source": location, "files": [asdict(f) for f in files]})
    return files
