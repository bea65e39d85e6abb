"""The served model's versions: full artifacts kept beside it, installed and rolled back atomically.

Layout, for a model served from ``<dir>/<name>``::

    <dir>/<name>/                      the served artifact (what ``model.path`` names)
    <dir>/<name>.versions/<version>/   every kept version, each a complete artifact
    <dir>/<name>.versions/.lock        serialises teach, install and rollback (flock)

Installing a version rebuilds ``<dir>/<name>`` through the atomic artifact writer from hard links
to the version's files (no copy; artifact files are never modified in place), so a kill at
any point leaves either the old or the new model served. A teach writes its version into the
store first; only a finished, checksummed version is ever installed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from edgead.artifact import (
    ArtifactWriter,
    manifest_sha256,
    read_manifest_json,
    verify_artifact,
)
from edgead.errors import ArtifactError, EdgeadError
from edgead.manifest import MANIFEST

DEFAULT_KEEP = 5


class VersionError(EdgeadError):
    """No such version, or nothing to roll back to."""


@dataclass
class VersionInfo:
    version: str
    created: str | None
    sha256: str
    current: bool
    parent: str | None
    added: str | None
    request: str | None
    threshold: float | None
    bank_size: int | None

    def to_dict(self) -> dict:
        return asdict(self)


def store_dir(model_path: str | Path) -> Path:
    p = Path(model_path).resolve()
    return p.parent / f"{p.name}.versions"


def version_name(manifest: dict) -> str:
    """A version's directory name: its model_version (or the manifest's sha256 prefix)."""
    name = str(manifest.get("model_version") or "")
    if not name or "/" in name or name.startswith(".") or "\x00" in name:
        raise ArtifactError("the artifact has no usable model_version to name its version directory")
    return name


class StoreBusy(EdgeadError):
    """Another teach, install or rollback holds the store."""


@contextlib.contextmanager
def locked(model_path: str | Path, wait: bool = True) -> Iterator[Path]:
    """Hold the store's lock (one teach, install or rollback at a time, across processes);
    ``wait=False``: StoreBusy at once when it is held."""
    root = store_dir(model_path)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise StoreBusy(f"{root}: a teach or rollback is running") from None
        try:
            yield root
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def link_file(src: Path, dst: Path) -> None:
    """Hard link (artifact files are never modified in place), or a copy where links fail."""
    try:
        os.link(src, dst)
    except OSError:   # another file system, or links unsupported
        shutil.copy2(src, dst)


def _rebuild(src: Path, out: Path) -> Path:
    """Write ``out`` atomically as a copy (hard links; the manifest copied byte for byte) of the
    artifact at ``src``."""
    files = verify_artifact(src).files
    with ArtifactWriter(out) as writer:
        for name in files:
            link_file(src / name, writer.path(name))
        shutil.copy2(src / MANIFEST, writer.path(MANIFEST))   # rewritten in place by threshold edits: a copy
        return writer.commit_as_staged()


def archive_current(model_path: str | Path) -> str:
    """Keep the served artifact in the store (once per version); returns its version name."""
    model_path = Path(model_path).resolve()
    manifest = read_manifest_json(model_path)
    name = version_name(manifest)
    target = store_dir(model_path) / name
    if not (target / MANIFEST).is_file():
        _rebuild(model_path, target)
    return name


def list_versions(model_path: str | Path) -> list[VersionInfo]:
    """Kept versions, oldest first; ``current`` marks the one served."""
    model_path = Path(model_path).resolve()
    root = store_dir(model_path)
    current = read_manifest_json(model_path).get("model_version") if (model_path / MANIFEST).is_file() else None
    out = []
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        if d.name.startswith(".") or not (d / MANIFEST).is_file():
            continue   # a teach's unfinished staging directory, or the lock
        try:
            m = read_manifest_json(d)
        except ArtifactError:
            continue
        lineage = m.get("lineage") or {}
        out.append((os.stat(d / MANIFEST).st_mtime_ns, VersionInfo(
            version=d.name, created=m.get("created"), sha256=manifest_sha256(d), current=d.name == current,
            parent=lineage.get("parent_version"), added=lineage.get("added"), request=lineage.get("request"),
            threshold=m.get("threshold"), bank_size=m.get("bank_size"))))
    out.sort(key=lambda t: (t[1].created or "", t[0]))
    return [v for _, v in out]


def install(model_path: str | Path, version: str) -> Path:
    """Serve ``version`` from ``model_path`` (atomic swap; the caller reloads the daemon)."""
    src = store_dir(model_path) / version
    if "/" in version or version.startswith(".") or not (src / MANIFEST).is_file():
        raise VersionError(f"version {version!r}: not kept in {store_dir(model_path)}")
    return _rebuild(src, Path(model_path).resolve())


def prune(model_path: str | Path, keep: int) -> list[str]:
    """Drop the oldest versions beyond ``keep`` (never the served one); returns the dropped names."""
    versions = list_versions(model_path)
    excess = len(versions) - max(1, int(keep))
    dropped = []
    for v in versions:
        if excess <= 0:
            break
        if v.current:
            continue
        shutil.rmtree(store_dir(model_path) / v.version, ignore_errors=True)
        dropped.append(v.version)
        excess -= 1
    return dropped


def rollback_target(model_path: str | Path, to: str | None) -> str:
    """The version a rollback installs: ``to``, else the served version's parent when kept, else
    the newest version older than the served one."""
    versions = list_versions(model_path)
    names = [v.version for v in versions]
    if to is not None:
        if to not in names:
            raise VersionError(f"version {to!r}: not kept (kept: {', '.join(names) or 'none'})")
        return to
    cur = next((i for i, v in enumerate(versions) if v.current), None)
    if cur is None:
        raise VersionError("the served model is not among the kept versions: name one to roll back to")
    if versions[cur].parent in names:
        return versions[cur].parent
    if cur == 0:
        raise VersionError(f"no version older than the served {versions[cur].version} is kept")
    return versions[cur - 1].version


def sweep_unfinished(model_path: str | Path) -> None:
    """Remove staging and scratch directories of teaches that died (call with the lock held)."""
    root = store_dir(model_path)
    for d in [*root.glob(".*.tmp-*"), *root.glob(".teach-features-*")]:
        shutil.rmtree(d, ignore_errors=True)


def rollback(model_path: str | Path, to: str | None = None, wait: bool = True) -> str:
    """Install ``to`` (or the served version's parent / predecessor); returns the version installed."""
    with locked(model_path, wait=wait):
        archive_current(model_path)
        target = rollback_target(model_path, to)
        install(model_path, target)
        return target
