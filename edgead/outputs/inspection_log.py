"""The inspection log: one SQLite row per scored frame, images of rejects (and a sample of good
frames) with their anomaly maps on disk, retention by count and size.

Crash safety. The database runs in WAL mode and every row is committed before the result is
returned to anyone, so a ``kill -9`` at any moment leaves a readable database holding every
acknowledged row: a committed transaction is in the WAL file (the kernel's page cache), which
survives the death of the process. ``synchronous = "normal"`` (default) fsyncs only at
checkpoints: a *power cut* may lose the last commits but never corrupts the file;
``"full"`` also survives power loss at the cost of one fsync per result (slow on SD cards).

Batched commits (``commit_interval_s`` > 0, fewer writes to an SD card): rows of parts nobody
waits for (continuous, GPIO and Modbus triggers) may wait up to that long in an open
transaction and commit together; a row someone is answered with (``durable=True``: HTTP,
OPC UA) commits at once, with any waiting before it. A crash loses at most the unacknowledged
rows of the last interval, never an acknowledged one; their decisions had already gone out.
Image files are written (temp + rename) before their row commits; files of rows that never
committed are removed at the next start.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgead.outputs.heatmap import encode, map_to_u8

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DB_NAME = "inspections.sqlite3"
SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: safe in file names and URLs
    ts               REAL    NOT NULL,                   -- unix time of capture/upload
    origin           TEXT    NOT NULL,                   -- capture | upload | continuous | gpio
    source           TEXT,                               -- source spec + frame name, or upload name
    score            REAL    NOT NULL,
    normalized_score REAL    NOT NULL,
    threshold        REAL    NOT NULL,
    decision         TEXT    NOT NULL CHECK (decision IN ('ok', 'reject')),
    model_name       TEXT,
    model_version    TEXT,
    model_sha256     TEXT,
    latency_json     TEXT,
    image_path       TEXT,                               -- relative to the images directory
    heatmap_path     TEXT,
    map_vmax         REAL,                               -- raw score that maps to 255 in the stored map
    image_bytes      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS results_decision ON results (decision, id);
CREATE INDEX IF NOT EXISTS results_images ON results (id) WHERE image_path IS NOT NULL;
CREATE TABLE IF NOT EXISTS threshold_overrides (
    model_sha256 TEXT PRIMARY KEY,
    threshold    REAL NOT NULL,
    set_at       REAL NOT NULL
);
"""
COLUMNS = ("id", "ts", "origin", "source", "score", "normalized_score", "threshold", "decision", "model_name",
           "model_version", "model_sha256", "latency_json", "image_path", "heatmap_path", "map_vmax", "image_bytes")


@dataclass
class Record:
    """What is logged for one result."""

    ts: float
    origin: str
    source: str | None
    score: float
    normalized_score: float
    threshold: float
    decision: str
    model_name: str = ""
    model_version: str = ""
    model_sha256: str = ""
    latency_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Stored:
    """A committed row: its id and the stored files (relative paths, None when not stored)."""

    id: int
    image_path: str | None = None
    heatmap_path: str | None = None


@dataclass(frozen=True)
class Retention:
    """Limits enforced after each insert; 0 means unlimited."""

    max_results: int = 1_000_000
    max_images: int = 2000
    max_image_bytes: int = 1 << 30


class InspectionLog:
    """SQLite log + image store under ``data_dir``. Thread-safe; one writer at a time."""

    def __init__(self, data_dir: str | Path, *, synchronous: str = "normal", retention: Retention = Retention(),
                 image_format: str = "jpg", jpeg_quality: int = 90, map_max_side: int = 512,
                 commit_interval_s: float = 0.0):
        if synchronous.upper() not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous {synchronous!r}: expected 'normal' or 'full'")
        if image_format not in ("jpg", "png"):
            raise ValueError(f"image_format {image_format!r}: expected 'jpg' or 'png'")
        self.data_dir = Path(data_dir)
        self.images_dir = self.data_dir / "images"
        self.images_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.data_dir / DB_NAME
        self.retention = retention
        self.image_format = image_format
        self.jpeg_quality = jpeg_quality
        self.map_max_side = map_max_side
        self._write_lock = threading.Lock()
        self.commit_interval_s = commit_interval_s
        self._batch_since: float | None = None  # a batch transaction is open since (monotonic)
        self._doomed: list[str] = []  # files to unlink once the rows that dropped them are committed
        self._flusher: threading.Thread | None = None
        self._closing = threading.Event()
        self._read_lock = threading.Lock()
        self._db = self._connect(synchronous)
        self._migrate()
        self._reader = self._connect(synchronous)
        row = self._db.execute(
            "SELECT COUNT(*), COUNT(image_path), COALESCE(SUM(image_bytes), 0) FROM results").fetchone()
        self._rows, self._images, self._image_bytes = int(row[0]), int(row[1]), int(row[2])
        self._sweep_orphans()
        if commit_interval_s > 0:
            self._flusher = threading.Thread(target=self._flush_loop, name="edgead-log-flush", daemon=True)
            self._flusher.start()

    # -- setup ---------------------------------------------------------------------------------
    def _connect(self, synchronous: str) -> sqlite3.Connection:
        db = sqlite3.connect(self.db_path, timeout=10.0, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        db.execute("PRAGMA journal_size_limit = 8388608")  # truncate the WAL back to 8 MB after checkpoints
        db.execute("PRAGMA busy_timeout = 10000")
        return db

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"{self.db_path}: schema version {version} is newer than this edgead ({SCHEMA_VERSION})")
        with self._write_lock:
            self._db.executescript(f"BEGIN; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")

    def _sweep_orphans(self) -> None:
        """Remove image files no row refers to (written by a process killed before its commit)."""
        referenced = set()
        for image_path, heatmap_path in self._db.execute(
            "SELECT image_path, heatmap_path FROM results WHERE image_path IS NOT NULL"
        ):
            referenced.update((image_path, heatmap_path))
        removed = 0
        for path in self.images_dir.rglob("*"):
            if path.is_file() and path.relative_to(self.images_dir).as_posix() not in referenced:
                path.unlink(missing_ok=True)
                removed += 1
        if removed:
            log.info("inspection log: removed %d orphaned image file(s)", removed)

    # -- writing -------------------------------------------------------------------------------
    def record(self, rec: Record, image: np.ndarray | None = None, anomaly_map: np.ndarray | None = None,
               durable: bool = True) -> Stored:
        """Commit one result (with its image and map when given). With ``durable`` (or no batch
        interval) the row is durable against a process kill when this returns; otherwise it
        commits with its batch, within ``commit_interval_s``."""
        with self._write_lock:
            if self._batch_since is None:
                self._db.execute("BEGIN IMMEDIATE")
                self._batch_since = time.monotonic()
            self._db.execute("SAVEPOINT rec")  # a failed row must not take the batch with it
            try:
                cur = self._db.execute(
                    "INSERT INTO results (ts, origin, source, score, normalized_score, threshold, decision, model_name,"
                    " model_version, model_sha256, latency_json) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (rec.ts, rec.origin, rec.source, rec.score, rec.normalized_score, rec.threshold, rec.decision,
                     rec.model_name, rec.model_version, rec.model_sha256,
                     json.dumps({k: round(float(v), 3) for k, v in rec.latency_ms.items()})),
                )
                rid = int(cur.lastrowid)
                files = self._store_images(rid, rec, image, anomaly_map) if image is not None else (None, None)
                self._db.execute("RELEASE rec")
            except BaseException:
                self._db.execute("ROLLBACK TO rec")
                self._db.execute("RELEASE rec")
                if durable or self.commit_interval_s <= 0:
                    self._commit()
                raise
            self._rows += 1
            self._enforce_retention()
            if durable or self.commit_interval_s <= 0:
                self._commit()
            return Stored(rid, *files)

    def _commit(self) -> None:
        """Commit the open transaction, then unlink the files its rows let go (write lock held)."""
        if self._batch_since is None:
            return
        self._db.execute("COMMIT")
        self._batch_since = None
        doomed, self._doomed = self._doomed, []
        for rel in doomed:
            (self.images_dir / rel).unlink(missing_ok=True)

    def flush(self) -> None:
        """Commit waiting batched rows now."""
        with self._write_lock:
            self._commit()

    def _flush_loop(self) -> None:
        while not self._closing.wait(self.commit_interval_s / 4):
            since = self._batch_since
            if since is not None and time.monotonic() - since >= self.commit_interval_s:
                try:
                    self.flush()
                except sqlite3.Error:
                    log.exception("inspection log: cannot commit a batch")

    def _store_images(self, rid: int, rec: Record, image: np.ndarray,
                      anomaly_map: np.ndarray | None) -> tuple[str | None, str | None]:
        """Write the frame (and the map as a grey PNG scaled to 2 x threshold) and point the row at
        them. An unwritable disk costs the images, never the row."""
        folder = f"{rid // 1000:06d}"
        image_rel = f"{folder}/{rid}.{self.image_format}"
        map_rel = f"{folder}/{rid}.map.png" if anomaly_map is not None else None
        vmax = 2.0 * rec.threshold
        try:
            size = _write_atomic(self.images_dir / image_rel, encode(image, self.image_format, self.jpeg_quality))
            if map_rel is not None:
                size += _write_atomic(self.images_dir / map_rel,
                                      encode(map_to_u8(anomaly_map, vmax, self.map_max_side), "png"))
        except (OSError, ValueError) as exc:
            log.warning("inspection log: images of result %d not stored (%s)", rid, exc)
            return None, None
        self._db.execute(
            "UPDATE results SET image_path = ?, heatmap_path = ?, map_vmax = ?, image_bytes = ? WHERE id = ?",
            (image_rel, map_rel, vmax, size, rid))
        self._images += 1
        self._image_bytes += size
        return image_rel, map_rel

    def _enforce_retention(self) -> None:
        """Drop the oldest images beyond the count/size limits, then the oldest rows beyond
        max_results. Rows are updated and committed before files are unlinked."""
        r = self.retention
        doomed: list[str] = []
        too_many = bool(r.max_images and self._images > r.max_images)
        if too_many or (r.max_image_bytes and self._image_bytes > r.max_image_bytes):
            excess = max(self._images - r.max_images if r.max_images else 0, 0)
            rows = self._db.execute(
                "SELECT id, image_path, heatmap_path, image_bytes FROM results WHERE image_path IS NOT NULL ORDER BY id"
                " LIMIT ?", (max(excess, 1) + 16,)).fetchall()
            drop, count, size = [], self._images, self._image_bytes
            for row in rows:
                if not ((r.max_images and count > r.max_images) or (r.max_image_bytes and size > r.max_image_bytes)):
                    break
                drop.append(row["id"])
                doomed += [p for p in (row["image_path"], row["heatmap_path"]) if p]
                count -= 1
                size -= row["image_bytes"]
            if drop:
                marks = ",".join("?" * len(drop))
                self._db.execute(f"UPDATE results SET image_path = NULL, heatmap_path = NULL, image_bytes = 0"
                                 f" WHERE id IN ({marks})", drop)
                self._images, self._image_bytes = count, size
        if r.max_results and self._rows > r.max_results:
            excess = self._rows - r.max_results
            rows = self._db.execute("SELECT id, image_path, heatmap_path, image_bytes FROM results ORDER BY id LIMIT ?",
                                    (excess,)).fetchall()
            if rows:
                for row in rows:
                    if row["image_path"]:
                        doomed += [p for p in (row["image_path"], row["heatmap_path"]) if p]
                        self._images -= 1
                        self._image_bytes -= row["image_bytes"]
                self._db.execute("DELETE FROM results WHERE id <= ?", (rows[-1]["id"],))
                self._rows -= len(rows)
        self._doomed += doomed  # unlinked after the commit: a crash before it leaves rows with their files

    def set_threshold_override(self, model_sha256: str, threshold: float | None) -> None:
        """Persist (or with None, forget) the threshold set for one model."""
        with self._write_lock:
            if threshold is None:
                self._db.execute("DELETE FROM threshold_overrides WHERE model_sha256 = ?", (model_sha256,))
            else:
                self._db.execute("INSERT OR REPLACE INTO threshold_overrides VALUES (?, ?, ?)",
                                 (model_sha256, float(threshold), time.time()))
            self._commit()  # inside an open batch the change waited for it

    def threshold_override(self, model_sha256: str) -> float | None:
        row = self._query("SELECT threshold FROM threshold_overrides WHERE model_sha256 = ?", (model_sha256,))
        return float(row[0]["threshold"]) if row else None

    # -- reading -------------------------------------------------------------------------------
    def _query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._read_lock:
            return self._reader.execute(sql, args).fetchall()

    def get(self, rid: int) -> dict[str, Any] | None:
        rows = self._query(f"SELECT {', '.join(COLUMNS)} FROM results WHERE id = ?", (rid,))
        return _row_dict(rows[0]) if rows else None

    def list(self, limit: int = 50, decision: str | None = None, before_id: int | None = None) -> list[dict[str, Any]]:
        """Newest first; ``before_id`` pages back through older rows."""
        where, args = [], []
        if decision:
            where.append("decision = ?")
            args.append(decision)
        if before_id is not None:
            where.append("id < ?")
            args.append(before_id)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._query(f"SELECT {', '.join(COLUMNS)} FROM results {clause} ORDER BY id DESC LIMIT ?",
                           (*args, int(limit)))
        return [_row_dict(r) for r in rows]

    def counts(self) -> dict[str, int]:
        rows = self._query("SELECT decision, COUNT(*) AS n FROM results GROUP BY decision")
        out = {"ok": 0, "reject": 0}
        out.update({r["decision"]: int(r["n"]) for r in rows})
        return out

    def file(self, rel: str | None) -> Path | None:
        """Absolute path of a stored file (None when absent or outside the image store)."""
        if not rel:
            return None
        path = (self.images_dir / rel).resolve()
        if self.images_dir.resolve() not in path.parents or not path.is_file():
            return None
        return path

    def load_image(self, rel: str | None) -> np.ndarray | None:
        path = self.file(rel)
        return None if path is None else cv2.imread(str(path), cv2.IMREAD_UNCHANGED)

    def stats(self) -> dict[str, int]:
        return {"rows": self._rows, "images": self._images, "image_bytes": self._image_bytes}

    def close(self) -> None:
        self._closing.set()
        if self._flusher is not None:
            self._flusher.join(5)
        with self._write_lock:
            try:
                self._commit()
            except sqlite3.Error:
                log.exception("inspection log: cannot commit the last batch")
        with self._write_lock, self._read_lock:
            for db in (self._reader, self._db):
                try:
                    db.close()
                except sqlite3.Error:
                    pass


def _row_dict(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    d["latency_ms"] = json.loads(d.pop("latency_json") or "{}")
    d["is_anomaly"] = d["decision"] == "reject"
    return d


def _write_atomic(path: Path, data: bytes) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
    return len(data)
