"""The artifact's manifest as one typed model, and the name of every file an artifact holds.

``manifest.json`` is validated as a whole when it is read (:func:`parse_manifest`): a field
that is missing, of the wrong type or out of range, and a file the loader needs that the
manifest does not list, give one :class:`~edgead.errors.ArtifactError` naming the manifest,
the field (dotted path) and the problem, before anything is loaded.  Sections and fields that
only inform (parity report, score statistics, quantization, ``auto``) are kept as they are.

Files of an artifact (``tag`` is "" for the shared scorer, ``.t<i>`` for tile position i)::

    manifest.json              this model
    backbone.onnx              FP32 backbone + patch-feature aggregation
    backbone.int8.onnx         static QDQ INT8 of the same graph
    memory<tag>.q8.npz         PatchCore bank as int8 codes + per-row scale (edgead.bank.store)
    memory<tag>.npy            PatchCore bank as float16/float32 (older artifacts)
    memory<tag>.knn.npy        each bank row's nearest rows (optional)
    hnsw<tag>.bin              hnswlib index of the bank, graph links only (optional)
    gaussian<tag>.npz          PaDiM mean and precision matrices
    spade<tag>.npz             SPADE training images' global features and int8 feature maps

SimpleNet has no scorer file: its adaptor and discriminator are part of the backbone graph.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from edgead import READABLE_SCHEMA_VERSIONS
from edgead.errors import ArtifactError, ConfigError
from edgead.orientations import maps_per_image
from edgead.preprocess import PreprocessConfig
from edgead.tiling import TilingConfig

MANIFEST = "manifest.json"
Precision = Literal["int8", "fp32"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
BACKBONE_FILES = {"fp32": "backbone.onnx", "int8": "backbone.int8.onnx"}
Method = Literal["patchcore", "padim", "simplenet", "spade"]
METHODS: tuple[str, ...] = get_args(Method)
BankDtype = Literal["int8", "float16", "float32"]
BANK_DTYPES: tuple[str, ...] = get_args(BankDtype)
ImageScoreRuleName = Literal["reweighted", "topk_mean"]
MAX_LISTED_ERRORS = 5


# -- file names ---------------------------------------------------------------------------------
def tile_tag(tile: int | None) -> str:
    """The suffix of a scorer's files: "" for the shared scorer, ".t<i>" for tile position i."""
    return "" if tile is None else f".t{tile}"


def bank_file(dtype: str, tag: str = "") -> str:
    """File name of a PatchCore bank stored as ``dtype``."""
    if dtype not in BANK_DTYPES:
        raise ValueError(f"bank dtype {dtype!r}: expected one of {', '.join(BANK_DTYPES)}")
    return f"memory{tag}.q8.npz" if dtype == "int8" else f"memory{tag}.npy"


def knn_file(tag: str = "") -> str:
    return f"memory{tag}.knn.npy"


def index_file(tag: str = "") -> str:
    return f"hnsw{tag}.bin"


def gaussian_file(tag: str = "") -> str:
    return f"gaussian{tag}.npz"


def spade_file(tag: str = "") -> str:
    return f"spade{tag}.npz"


def scorer_files(method: str, tile: int | None = None) -> dict[str, str]:
    """File names of one scorer: the shared one (tile None) or tile position ``tile``'s
    (PatchCore: ``tag`` goes to edgead.bank.store, which names the bank file)."""
    tag = tile_tag(tile)
    if method == "patchcore":
        return {"tag": tag, "index": index_file(tag)}
    if method == "spade":
        return {"gallery": spade_file(tag)}
    if method == "simplenet":
        return {}
    return {"gaussian": gaussian_file(tag)}


# -- the model ----------------------------------------------------------------------------------
class _Section(BaseModel):
    """A manifest section: the fields the runtime reads are typed; any others are kept."""

    model_config = ConfigDict(extra="allow", frozen=True)


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise PydanticCustomError("finite_number", "Input should be a finite number")
    return value


class FileEntry(_Section):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex sha256 of the file")
    bytes: NonNegativeInt = Field(description="size of the file")


class BackboneInfo(_Section):
    name: str = Field(description="backbone the features come from (efficientnet-lite0, ...)")
    taps: list[int | str] | None = Field(None, description="feature taps the graph concatenates")
    tap_channels: list[PositiveInt] | None = None
    feature_grid: tuple[PositiveInt, PositiveInt] = Field(description="(h, w) of the patch-feature grid")
    aggregation: NonNegativeInt | None = None
    target_dim: PositiveInt | None = None
    channel_index: list[NonNegativeInt] | None = None


class ImageScoreRule(_Section):
    """How PatchCore turns patch distances into the image score (absent: the paper's reweighting)."""

    rule: ImageScoreRuleName = "reweighted"
    k: PositiveInt = Field(10, description="topk_mean: how many of the largest patch distances are averaged")
    b: PositiveInt | None = Field(None, description="reweighted: neighbours of the support set")


class HnswParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    M: StrictInt | None = Field(None, gt=0)
    ef_construction: StrictInt | None = Field(None, gt=0)
    ef_search: StrictInt | None = Field(None, gt=0)
    seed: StrictInt | None = None


class PatchCoreInfo(_Section):
    num_neighbors: PositiveInt = Field(9, description="b, neighbours of the reweighting's support set")
    image_score: ImageScoreRule = Field(default_factory=ImageScoreRule)
    bank_dtype: BankDtype | None = Field(None, description="how the bank is stored (the files say it too)")
    hnsw: HnswParams | None = Field(None, description="parameters of the hnswlib index, when there is one")
    coreset: float | None = Field(None, gt=0)
    coreset_max: PositiveInt | None = None
    projection_dim: PositiveInt | None = None


class PadimInfo(_Section):
    d: PositiveInt | None = Field(None, description="random channels per position")


class FalseRejectInfo(_Section):
    """The false-reject rate a precision's threshold is expected to give on new good parts
    (edgead.false_rejects), from out-of-sample scores of the good images."""

    threshold: float = Field(description="the threshold the estimate is for")
    target_frr: float = Field(gt=0, lt=1, description="false-reject rate the threshold was set for")
    good_images: PositiveInt = Field(description="out-of-sample good scores the estimate rests on")
    rejected: NonNegativeInt = Field(description="of them, scored above the threshold")
    expected_frr: float = Field(ge=0, le=1, description="(rejected + 1) / (good_images + 1)")
    frr_upper: float = Field(ge=0, le=1, description="one-sided Clopper-Pearson upper bound on the rate")
    confidence: float = Field(gt=0, lt=1, description="confidence of frr_upper")
    folds: PositiveInt | None = Field(None, description="k of the k-fold out-of-fold scores")
    fold_order: str | None = Field(None, description="contiguous (runs in name order) or random folds")


class Lineage(_Section):
    """Where a version taught on the line comes from (absent: exported on a workstation)."""

    parent_version: str | None = Field(None, description="model_version of the artifact it was taught from")
    parent_sha256: str | None = Field(None, description="sha256 of the parent's manifest.json")
    mode: Literal["new", "add"] = Field(description="new: refit from the frames; add: frames joined the bank")
    added: str = Field(description="what was added, in words (a folder, N frames from the source, result ids)")
    frames: NonNegativeInt = Field(0, description="good frames used")
    result_ids: list[int] = Field(default_factory=list, description="inspection results marked good")
    at: str = Field(description="when it was taught (UTC, ISO 8601)")
    request: str | None = Field(None, description="the teach job or command that made it")


class MapScoreRule(_Section):
    """How a score-map method (SimpleNet) turns its map into the image score."""

    rule: Literal["max", "topk_mean"] = Field("max", description="max of the smoothed map (the paper's), or the "
                                                                 "mean of the k largest patch scores")
    k: PositiveInt = Field(10, description="topk_mean: how many of the largest patch scores are averaged")


class SimpleNetInfo(_Section):
    image_score: MapScoreRule = Field(default_factory=MapScoreRule)
    hidden: PositiveInt | None = Field(None, description="discriminator width")


class SpadeInfo(_Section):
    k: PositiveInt = Field(50, description="nearest training images whose global-feature distances average to the "
                                           "image score")
    map_images: PositiveInt = Field(5, description="nearest training images whose feature maps the anomaly map "
                                                   "searches")


class Manifest(_Section):
    """``manifest.json`` of an artifact, validated."""

    schema_version: int
    method: Method
    backbone: BackboneInfo
    preprocess: PreprocessConfig = Field(description="how a frame becomes model input (edgead.preprocess)")
    tiling: TilingConfig = Field(default_factory=TilingConfig, description="absent: one tile")
    feature_dim: PositiveInt
    threshold: float = Field(gt=0, description="decision threshold of the default precision")
    thresholds: dict[Precision, float] = Field(default_factory=dict, description="threshold per precision")
    default_precision: Precision = "int8"
    map_sigma: float = Field(4.0, ge=0, description="Gaussian blur of the anomaly map, input pixels")
    patchcore: PatchCoreInfo | None = None
    padim: PadimInfo | None = None
    simplenet: SimpleNetInfo | None = None
    spade: SpadeInfo | None = None
    name: str | None = None
    model_version: str | None = None
    created: str | None = None
    edgead_version: str | None = None
    bank_size: NonNegativeInt | None = None
    training_images: NonNegativeInt | None = None
    seed: int = 0
    parity: dict[str, Any] | None = None
    false_rejects: dict[Precision, FalseRejectInfo] | None = Field(
        None, description="expected false-reject rate per precision (absent in older artifacts)")
    export: dict[str, Any] | None = Field(None, description="the export configuration (edgead_export.config)")
    lineage: Lineage | None = Field(None, description="set on versions taught on the line (edgead teach)")
    files: dict[str, FileEntry] = Field(description="every data file with its sha256 and size")

    @field_validator("threshold")
    @classmethod
    def _finite_threshold(cls, value: float) -> float:
        return _finite(value)

    @field_validator("thresholds")
    @classmethod
    def _positive_thresholds(cls, value: dict[str, float]) -> dict[str, float]:
        for precision, thr in value.items():
            if not (math.isfinite(thr) and thr > 0):
                raise PydanticCustomError("threshold", "{precision}: expected a positive finite threshold, got {thr}",
                                          {"precision": precision, "thr": thr})
        return value

    @field_validator("preprocess", mode="wrap")
    @classmethod
    def _preprocess(cls, value: Any, handler) -> PreprocessConfig:
        if isinstance(value, dict) and "input_size" not in value:
            raise PydanticCustomError("missing", "Field required", {"field": "input_size"})
        if isinstance(value, dict) and "resize_dtype" not in value:
            value = {**value, "resize_dtype": "uint8"}  # exported before the field: resized in uint8
        return _section(value, handler)

    @field_validator("tiling", mode="wrap")
    @classmethod
    def _tiling(cls, value: Any, handler) -> TilingConfig:
        return TilingConfig() if value is None else _section(value, handler)

    @field_validator("files")
    @classmethod
    def _files_the_loader_needs(cls, files: dict[str, FileEntry], info: ValidationInfo) -> dict[str, FileEntry]:
        """Every file the loader opens must be listed (so its checksum is verified)."""
        data = info.data
        if "method" not in data or "tiling" not in data:
            return files  # reported on their own fields
        needed = []
        precision = data.get("default_precision")  # absent: reported on its own field
        if precision is not None:
            needed.append([BACKBONE_FILES[precision]])
        tiles = [None] if data["tiling"].bank_count == 1 else list(range(data["tiling"].count))
        for tile in tiles:
            tag = tile_tag(tile)
            if data["method"] == "patchcore":
                needed.append([bank_file("int8", tag), bank_file("float16", tag)])
            elif data["method"] == "padim":
                needed.append([gaussian_file(tag)])
            elif data["method"] == "spade":
                needed.append([spade_file(tag)])
        missing = [" or ".join(names) for names in needed if not any(n in files for n in names)]
        if missing:
            raise PydanticCustomError("missing_file", "lists no {missing} ({method}, {tiles} scorer(s), "
                                      "{precision} backbone by default)",
                                      {"missing": ", ".join(missing), "method": data["method"],
                                       "tiles": len(tiles), "precision": precision})
        return files

    # -- what the loader asks ------------------------------------------------------------------
    @property
    def pc(self) -> PatchCoreInfo:
        """The PatchCore section (defaults when an old manifest has none)."""
        return self.patchcore or PatchCoreInfo()

    def threshold_for(self, precision: str) -> float:
        return float(self.thresholds.get(precision, self.threshold))

    def scorer_tiles(self) -> list[int | None]:
        """One scorer shared by every tile (None), or one per tile position."""
        return [None] if self.tiling.bank_count == 1 else list(range(self.tiling.count))

    @property
    def orientations(self) -> str:
        """How training images entered the model (edgead.orientations; "fixed" when not recorded)."""
        return str((self.export or {}).get("orientations", "fixed"))

    @property
    def maps_per_image(self) -> int:
        """Feature maps one training image gave the scorer: one per tile, per orientation."""
        return maps_per_image(self.tiling, self.orientations)


def _section(value: Any, handler) -> Any:
    """A runtime dataclass section; its own checks (ConfigError) become a validation error."""
    try:
        return handler(value)
    except ConfigError as exc:
        raise PydanticCustomError("invalid", "{problem}", {"problem": str(exc)}) from None


# -- reading ------------------------------------------------------------------------------------
def _describe(error: dict) -> str:
    loc = [str(p) for p in error["loc"]]
    if error.get("ctx", {}).get("field"):
        loc.append(error["ctx"]["field"])
    where = ".".join(loc) or "(top level)"
    got = ""
    if error["type"] not in ("missing", "invalid", "missing_file", "threshold") and "input" in error:
        text = repr(error["input"])
        got = f" (got {text[:60] + '...' if len(text) > 60 else text})"
    return f"{where}: {error['msg']}{got}"


def validation_message(exc: ValidationError) -> str:
    """One line: every problem as ``dotted.field: what is wrong``."""
    errors = exc.errors()
    parts = [_describe(e) for e in errors[:MAX_LISTED_ERRORS]]
    more = len(errors) - MAX_LISTED_ERRORS
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def parse_manifest(data: Any, path: str | Path = MANIFEST) -> Manifest:
    """Validate a parsed manifest.json; ArtifactError naming ``path``, the field and the problem."""
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: manifest is not a JSON object")
    version = data.get("schema_version")
    if "schema_version" not in data:
        raise ArtifactError(f"{path}: schema_version: field required")
    if version not in READABLE_SCHEMA_VERSIONS or isinstance(version, bool):
        raise ArtifactError(
            f"{path}: schema version {version!r} is not supported "
            f"(this edgead reads versions {', '.join(map(str, READABLE_SCHEMA_VERSIONS))}: a newer model "
            f"needs a newer edgead)"
        )
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise ArtifactError(f"{path}: {validation_message(exc)}") from None
