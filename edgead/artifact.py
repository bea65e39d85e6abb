"""The model artifact on disk: a directory with manifest.json + checksummed files.

What the manifest holds and what every file is called: :mod:`edgead.manifest`.  Written
atomically (temp dir + rename); loading validates the manifest and verifies every checksum.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from edgead import ARTIFACT_SCHEMA_VERSION
from edgead.errors import ArtifactError
from edgead.manifest import MANIFEST, Manifest, parse_manifest


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ArtifactWriter:
    """Stage files in a temp dir beside ``out``; ``commit(manifest)`` checksums and swaps it in.

    Use as a context manager: an exception (or a kill) before commit leaves ``out`` as it was
    and only a ``.<name>.tmp-*`` directory behind, which never loads (no manifest).
    """

    def __init__(self, out: str | Path):
        self.out = Path(out).resolve()
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.tmp-", dir=self.out.parent))

    def path(self, name: str) -> Path:
        return self.staging / name

    def write_manifest(self, manifest: dict) -> dict:
        """Checksum the staged files and write manifest.json into the staging dir."""
        files = {}
        for p in sorted(self.staging.iterdir()):
            if p.name == MANIFEST or not p.is_file():
                continue
            files[p.name] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        manifest = dict(manifest, files=files, schema_version=ARTIFACT_SCHEMA_VERSION)
        manifest.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        parse_manifest(manifest, self.out / MANIFEST)  # never write a model that would not load
        tmp_manifest = self.staging / MANIFEST
        with open(tmp_manifest, "w") as f:
            json.dump(manifest, f, indent=2, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(self.staging)
        return manifest

    def commit(self, manifest: dict) -> Path:
        """Write the final manifest and move the staged artifact to ``out``."""
        self.write_manifest(manifest)
        return self._swap_in()

    def commit_as_staged(self) -> Path:
        """Move a staged copy of a whole artifact (its manifest.json included, byte for byte: the
        same sha256, so per-model settings keyed by it still apply) to ``out``, once it verifies."""
        verify_artifact(self.staging)
        for p in self.staging.iterdir():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(self.staging)
        return self._swap_in()

    def _swap_in(self) -> Path:
        os.chmod(self.staging, 0o755)  # mkdtemp makes it 0700; the daemon's user must read it
        old = None
        if self.out.exists():
            old = self.out.parent / f".{self.out.name}.old-{os.getpid()}-{time.time_ns()}"
            os.rename(self.out, old)
        os.rename(self.staging, self.out)
        _fsync_dir(self.out.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.out

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> "ArtifactWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.staging.exists():
            self.abort()


def read_manifest_json(model_dir: str | Path) -> dict:
    """manifest.json as parsed JSON (unvalidated: for rewriting it with every field kept)."""
    model_dir = Path(model_dir)
    path = model_dir / MANIFEST
    if not model_dir.is_dir():
        raise ArtifactError(f"{model_dir}: model directory not found")
    if not path.is_file():
        raise ArtifactError(f"{path}: missing (not an edgead model directory, or an unfinished export)")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable manifest ({exc})") from None


def read_manifest(model_dir: str | Path) -> Manifest:
    """Parse and validate manifest.json (no checksum verification)."""
    return parse_manifest(read_manifest_json(model_dir), Path(model_dir) / MANIFEST)


def verify_artifact(model_dir: str | Path) -> Manifest:
    """Manifest + sha256 of every listed file; ArtifactError naming the first bad file."""
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    for name, meta in manifest.files.items():
        p = model_dir / name
        if Path(name).name != name:
            raise ArtifactError(f"{model_dir / MANIFEST}: files: {name!r} is not a file name in the model directory")
        if not p.is_file():
            raise ArtifactError(f"{p}: missing file listed in the manifest")
        if p.stat().st_size != meta.bytes:
            raise ArtifactError(f"{p}: size {p.stat().st_size} bytes, manifest says {meta.bytes} (truncated or modified)")
        if sha256_file(p) != meta.sha256:
            raise ArtifactError(f"{p}: sha256 mismatch (file modified or corrupt)")
    return manifest


def manifest_sha256(model_dir: str | Path) -> str:
    return sha256_file(Path(model_dir) / MANIFEST)


def update_manifest(model_dir: str | Path, **changes) -> Manifest:
    """Rewrite manifest.json atomically with ``changes`` (data files untouched); the result must
    validate, so an update never leaves a model that does not load."""
    model_dir = Path(model_dir)
    manifest = read_manifest_json(model_dir)
    manifest.update(changes)
    typed = parse_manifest(manifest, model_dir / MANIFEST)
    tmp = model_dir / f".{MANIFEST}.tmp"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, model_dir / MANIFEST)
    return typed


def pack_tar(model_dir: str | Path, tar_path: str | Path) -> Path:
    """Write the artifact directory as one .tar (atomically)."""
    import tarfile  # here, not at import: memory the daemon does not need

    model_dir, tar_path = Path(model_dir), Path(tar_path)
    tmp = tar_path.with_name(f".{tar_path.name}.tmp")
    with tarfile.open(tmp, "w") as tar:
        tar.add(model_dir, arcname=model_dir.name)
    os.replace(tmp, tar_path)
    return tar_path


def unpack_tar(tar_path: str | Path, dest: str | Path) -> Path:
    """Extract a packed artifact (safe paths only) and return its directory."""
    import tarfile

    tar_path, dest = Path(tar_path), Path(dest)
    try:
        with tarfile.open(tar_path) as tar:
            names = {m.name.split("/")[0] for m in tar.getmembers()}
            if len(names) != 1:
                raise ArtifactError(f"{tar_path}: expected one model directory inside the tar")
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise ArtifactError(f"{tar_path}: cannot unpack ({exc})") from None
    return dest / names.pop()
