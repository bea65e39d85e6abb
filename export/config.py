"""The export configuration: every setting of `edgead export`, defined once.

:class:`ExportConfig` is the only definition.  Its fields (with their descriptions) generate
the command-line options (:func:`add_options`, :meth:`ExportConfig.from_args`), the keys of an
``--auto`` candidate spec (:meth:`ExportConfig.with_spec`) and the ``export`` section of the
manifest, which a refit reads back (:meth:`ExportConfig.manifest_section`,
:meth:`ExportConfig.from_manifest`).  A field's :class:`Option` says how it is written as text;
manifests written before the ``export`` section existed are read through each field's
``legacy`` path (where those manifests recorded the same setting).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgead.errors import ConfigError
from edgead.false_rejects import DEFAULT_FOLDS, DEFAULT_TARGET_FRR
from edgead.manifest import BankDtype, ImageScoreRuleName, Manifest, Method
from edgead.orientations import check_orientations, maps_per_image
from edgead.preprocess import IMAGENET_MEAN, IMAGENET_STD, PreprocessConfig
from edgead.tiling import TilingConfig, parse_grid
from edgead_export.cli_common import parse_roi, parse_size

DEFAULT_CORESET_MAX = 20_000  # absolute cap on memory-bank rows (all tile banks together)
PREPROCESS_KEYS = ("input_size", "resize_mode", "roi", "interpolation", "photometric")
TILING_KEYS = ("grid", "overlap", "merge", "banks")  # fields tile_<key>


# -- how a field is written as text -------------------------------------------------------------
def _pair_text(value: tuple[int, int]) -> str:
    return f"{value[0]}x{value[1]}"


def _list_text(values) -> str:
    return ",".join(str(v) for v in values)


def _roi(text: str) -> tuple[float, float, float, float] | str:
    return "auto" if text == "auto" else parse_roi(text)[0]


def _roi_text(value) -> str:
    return value if value == "auto" else ",".join(repr(float(v)) for v in value)


def _taps(text: str) -> list[int | str]:
    return [int(t) if t.isdigit() else t for t in text.split(",") if t]


def _none_if_zero(text: str) -> int | None:
    return int(text) or None


def _zero_if_none(value: int | None) -> str:
    return "0" if value is None else str(value)


@dataclass(frozen=True)
class Option:
    """How one field of :class:`ExportConfig` is given as text.

    ``flag``: the command-line option (default ``--field-name``); ``spec``: its key in an
    ``--auto`` candidate spec (default the field name); ``parse`` / ``text``: text -> value and
    back (default: the text as it is, validated by the field's type, and ``str``); ``legacy``:
    the dotted manifest path where exports without an ``export`` section recorded the value;
    ``stored``: the field describes the model and goes into the manifest (run settings such as
    the data folder or the thread count do not); ``unrecorded``: the value an older manifest
    that did not record the setting was served with, where that differs from today's default."""

    flag: str | None = None
    spec: str | None = None
    parse: Callable[[str], Any] | None = None
    text: Callable[[Any], str] | None = None
    legacy: str | None = None
    stored: bool = True
    metavar: str | None = None
    unrecorded: Any = None  # what a manifest without the ``legacy`` path meant (the runtime's reading)


# -- the configuration --------------------------------------------------------------------------
class ExportConfig(BaseModel):
    """Everything `edgead export` can set."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data: Annotated[Path, Option(stored=False)] = Field(
        description="folder of good images, or an MVTec category root (train/good is used)")
    out: Annotated[Path, Option(stored=False)] = Field(description="artifact directory to write (replaced atomically)")
    method: Annotated[Method, Option(legacy="method")] = Field(
        "patchcore", description="anomaly model: PatchCore memory bank, PaDiM Gaussians, SimpleNet discriminator "
                                 "(no memory bank: one graph to the map) or SPADE (kNN over training images)")
    backbone: Annotated[str, Option(legacy="backbone.name")] = Field("efficientnet-lite0", description="feature backbone")
    taps: Annotated[list[int | str] | None, Option(parse=_taps, text=_list_text, legacy="backbone.taps")] = Field(
        None, description="comma-separated feature taps (default: the backbone's stride-8 and stride-16 stages)")
    input_size: Annotated[tuple[int, int], Option(flag="--size", spec="size", parse=parse_size, text=_pair_text,
                                                  legacy="preprocess.input_size", metavar="N|HxW")] = Field(
        (224, 224), description="model input: N or HxW, multiples of 32")
    resize_mode: Annotated[Literal["stretch", "letterbox"], Option(
        flag="--resize", spec="resize", legacy="preprocess.resize_mode")] = Field(
        "stretch", description="fit the ROI to the input: stretch (nothing cut off) or letterbox (aspect kept, padded)")
    interpolation: Annotated[Literal["area", "linear"], Option(spec="interp", legacy="preprocess.interpolation")] = Field(
        "area", description="resize filter when the image shrinks: INTER_AREA, or bilinear up to a 2x shrink "
                            "(faster, a little less accurate on fine textures)")
    photometric: Annotated[Literal["none", "equalize", "standardize"], Option(legacy="preprocess.photometric")] = Field(
        "none", description="per-frame brightness normalisation of the ROI, the same at fit and serve: histogram "
                            "equalisation or luminance mean/std standardised (helps textures under changing light, "
                            "can hurt other parts: compare candidates with --auto)")
    roi: Annotated[tuple[float, float, float, float] | Literal["auto"] | None, Option(
        parse=_roi, text=_roi_text, legacy="preprocess.roi", metavar="X,Y,W,H|auto")] = Field(
        None, description="region of interest x,y,w,h: fractions of the frame when every value is <= 1, else "
                          "pixels; 'auto': proposed from the training images")
    tile_grid: Annotated[tuple[int, int], Option(flag="--tiles", spec="tiles", parse=parse_grid, text=_pair_text,
                                                 legacy="tiling.grid", metavar="RxC")] = Field(
        (1, 1), description="score the ROI as RxC overlapping tiles, each at the input size")
    tile_overlap: Annotated[float, Option(spec="overlap", legacy="tiling.overlap")] = Field(
        0.25, description="overlap of neighbouring tiles, share of a tile side (with more than one tile)")
    tile_merge: Annotated[Literal["mean", "max"], Option(spec="merge", legacy="tiling.merge")] = Field(
        "mean", description="tile maps in their overlaps: mean or max")
    tile_banks: Annotated[Literal["shared", "per_tile"], Option(spec="banks", legacy="tiling.banks")] = Field(
        "shared", description="one memory bank for all tiles, or one per tile position")
    orientations: Literal["fixed", "flips", "all"] = Field(
        "fixed", description="training images also enter the model turned and mirrored, for parts that reach the "
                             "camera in any orientation: flips (mirrored both ways and a half turn, 4 copies) or all "
                             "(every quarter turn, each mirrored: 8 copies, square inputs); fixed: as captured. Costs "
                             "fitting time, not serving time")
    coreset: Annotated[float, Option(legacy="patchcore.coreset")] = Field(
        0.01, description="coreset ratio (<= 1) or row count (> 1) of the memory bank (try 0.1 with under ~100 "
                          "training images)")
    coreset_max: Annotated[int | None, Option(parse=_none_if_zero, text=_zero_if_none,
                                              legacy="patchcore.coreset_max")] = Field(
        DEFAULT_CORESET_MAX, description="cap on memory-bank rows, all tile banks together (0: no cap)")
    proj_dim: Annotated[int | None, Option(parse=_none_if_zero, text=_zero_if_none,
                                           legacy="patchcore.projection_dim")] = Field(
        128, description="random projection dimensions of the coreset selection (0: none)")
    num_neighbors: Annotated[int, Option(flag="--neighbors", legacy="patchcore.num_neighbors")] = Field(
        9, description="b, bank neighbours of the reweighted image score")
    image_score: Annotated[ImageScoreRuleName, Option(spec="score", legacy="patchcore.image_score.rule",
                                                      unrecorded="reweighted")] = Field(
        "topk_mean", description="PatchCore image score: the mean of the --topk largest patch distances, or the "
                                 "paper's reweighted maximum (ranks real defects lower on the measured sets); SimpleNet: the same "
                                 "over its patch scores, reweighted meaning the maximum of the smoothed map")
    topk: Annotated[int, Option(legacy="patchcore.image_score.k")] = Field(
        60, description="k of --image-score topk_mean (60 of the 784 patches at 224 px)")
    target_dim: Annotated[int | None, Option(legacy="backbone.target_dim")] = Field(
        None, description="reduce patch features to this dimension (adaptive channel pooling)")
    padim_dim: Annotated[int, Option(legacy="padim.d")] = Field(100, description="PaDiM: random channels d")
    padim_dtype: Annotated[Literal["float16", "float32"], Option(legacy="padim.precision_dtype")] = Field(
        "float16", description="PaDiM: precision matrices stored as")
    simplenet_hidden: Annotated[int, Option(legacy="simplenet.hidden")] = Field(
        128, description="SimpleNet: discriminator width (its cost per patch is about feature dim x width)")
    simplenet_noise: float = Field(
        0.25, description="SimpleNet: std of the Gaussian noise that makes the synthetic anomalous features, as a "
                          "share of each adapted feature channel's spread")
    simplenet_steps: int = Field(500, description="SimpleNet: training steps (bounds the fit time)")
    simplenet_batch: int = Field(1024, description="SimpleNet: normal patches per training step")
    spade_k: Annotated[int, Option(legacy="spade.k")] = Field(
        50, description="SPADE: nearest training images whose global-feature distances average to the image score")
    spade_map_images: Annotated[int, Option(legacy="spade.map_images")] = Field(
        5, description="SPADE: nearest training images whose feature maps the anomaly map searches (its cost "
                       "grows with it)")
    bank_dtype: Annotated[BankDtype, Option(legacy="patchcore.bank_dtype")] = Field(
        "int8", description="memory bank on disk: int8 codes + per-row scale (what the int8 search uses), float16 "
                            "or float32")
    keep_fp32: bool = Field(
        False, description="keep the FP32 backbone in the artifact when INT8 passes parity (for --precision fp32 "
                           "on the Pi)")
    hnsw: Literal["auto", "yes", "no"] = Field(
        "auto", description="build an hnswlib index of the bank: yes, no, or auto (for banks above the measured "
                            "crossover)")
    holdout: float = Field(0.1, description="share of the good images held out to calibrate the threshold")
    min_holdout: int = Field(5, description="at least this many good images are held out")
    target_frr: Annotated[float | None, Option(parse=lambda t: float(t) or None,
                                               text=lambda v: "0" if v is None else f"{v:g}")] = Field(
        DEFAULT_TARGET_FRR, description="threshold for this false-reject rate on good parts, set from out-of-fold "
                                        "scores of every good image (0: the older rule, max / mean + 3 std of the "
                                        "held-out goods; --val-defects: F1-optimal instead)")
    folds: int = Field(DEFAULT_FOLDS, description="k of the k-fold out-of-fold scores behind --target-frr")
    fold_order: Literal["contiguous", "random"] = Field(
        "contiguous", description="folds of --target-frr: runs of neighbouring images in name order (a fold "
                                  "stands for a later batch or another spot, as a new part does) or random")
    calib_images: int = Field(64, description="training images that calibrate the INT8 quantization")
    int8_float_blocks: bool = Field(
        False, description="INT8 keeps the backbone's first two blocks float as well as the stem: about half the "
                           "patch-feature error, about a sixth more backbone time, and scores that differ between x86 "
                           "and ARM by float rounding (the default INT8 graph computes the same integers on both)")
    map_sigma: Annotated[float, Option(legacy="map_sigma")] = Field(
        4.0, description="Gaussian blur of the anomaly map, input pixels")
    seed: Annotated[int, Option(legacy="seed")] = Field(0, description="seed of the hold-out split, coreset and "
                                                                        "projections")
    val_defects: Annotated[Path | None, Option(stored=False)] = Field(
        None, description="folder of defect images: the threshold is then F1-optimal on them and the held-out goods")
    name: Annotated[str | None, Option(stored=False)] = Field(
        None, description="model name stored in the manifest (default: the output folder's)")
    threads: Annotated[int, Option(stored=False)] = Field(2, description="CPU threads of the export")
    tar: Annotated[bool, Option(stored=False)] = Field(False, description="also write MODEL_DIR.tar")
    progress: Annotated[bool, Option(flag="--no-progress", stored=False)] = Field(
        True, description="progress bars and log lines on stderr (--no-progress: quiet)")

    # -- checks ----------------------------------------------------------------------------------
    @model_validator(mode="before")
    @classmethod
    def _whole_sections(cls, data: Any) -> Any:
        """A PreprocessConfig / TilingConfig may be given whole (``preprocess=``, ``tiling=``);
        ``roi_auto=True`` is ``roi="auto"``."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        pre = data.pop("preprocess", None)
        if pre is not None:
            if tuple(pre.mean) != IMAGENET_MEAN or tuple(pre.std) != IMAGENET_STD or pre.color != "rgb":
                raise ValueError("preprocess: export normalises with the ImageNet mean and std, RGB")
            if pre.resize_dtype != PreprocessConfig().resize_dtype:  # not an export setting: silently dropped else
                raise ValueError(f"preprocess: resize_dtype {pre.resize_dtype!r}: export resizes in "
                                 f"{PreprocessConfig().resize_dtype} (older artifacts keep theirs)")
            if pre.roi is not None and _inferred_units(pre.roi) != pre.roi_units:
                raise ValueError(f"preprocess: roi {pre.roi} in {pre.roi_units}: give pixel ROIs in pixels and "
                                 "fraction ROIs as values <= 1")
            data.update({k: getattr(pre, k) for k in PREPROCESS_KEYS})
        tiling = data.pop("tiling", None)
        if tiling is not None:
            data.update({f"tile_{k}": getattr(tiling, k) for k in TILING_KEYS})
        if data.pop("roi_auto", False):
            data["roi"] = "auto"
        return data

    @field_validator("coreset")
    @classmethod
    def _coreset(cls, value: float) -> float:
        if not value > 0:
            raise ValueError("expected a ratio in (0, 1] or a row count > 1")
        return int(value) if value > 1 else value

    @field_validator("coreset_max", "proj_dim", "target_dim")
    @classmethod
    def _positive_or_none(cls, value: int | None) -> int | None:
        if value is not None and value <= 0:
            raise ValueError("expected a positive number (or none)")
        return value

    @field_validator("num_neighbors", "topk", "padim_dim", "min_holdout", "calib_images", "threads",
                     "simplenet_hidden", "simplenet_steps", "simplenet_batch", "spade_k", "spade_map_images")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("expected 1 or more")
        return value

    @field_validator("target_frr")
    @classmethod
    def _rate(cls, value: float | None) -> float | None:
        if value is not None and not 0 < value < 1:
            raise ValueError("expected a rate in (0, 1), or 0 for the held-out rule")
        return value

    @field_validator("folds")
    @classmethod
    def _folds(cls, value: int) -> int:
        if value < 2:
            raise ValueError("expected 2 or more")
        return value

    @field_validator("holdout")
    @classmethod
    def _share(cls, value: float) -> float:
        if not 0 < value < 1:
            raise ValueError("expected a share in (0, 1)")
        return value

    @field_validator("simplenet_noise")
    @classmethod
    def _positive_float(cls, value: float) -> float:
        if not value > 0:
            raise ValueError("expected a positive number")
        return value

    @model_validator(mode="after")
    def _sections_check(self) -> "ExportConfig":
        self.preprocess, self.tiling  # noqa: B018  (their own checks raise ConfigError)
        if self.method == "simplenet" and self.tile_banks == "per_tile" and self.tile_grid != (1, 1):
            raise ValueError("--method simplenet has one discriminator for every tile: use --tile-banks shared")
        if self.method == "spade" and self.tile_grid != (1, 1):
            raise ValueError("--method spade scores whole frames: no --tiles")
        check_orientations(self.orientations, self.input_size)
        return self

    # -- the runtime's view ----------------------------------------------------------------------
    @property
    def roi_auto(self) -> bool:
        return self.roi == "auto"

    @property
    def preprocess(self) -> PreprocessConfig:
        values = {k: getattr(self, k) for k in PREPROCESS_KEYS}
        roi = None if self.roi in (None, "auto") else self.roi
        return PreprocessConfig(**{**values, "roi": roi, "roi_units": _inferred_units(roi)})

    @property
    def maps_per_image(self) -> int:
        """Feature maps a training image gives: one per tile, per orientation."""
        return maps_per_image(self.tiling, self.orientations)

    @property
    def tiling(self) -> TilingConfig:
        values = {k: getattr(self, f"tile_{k}") for k in TILING_KEYS}
        if self.tile_grid == (1, 1):
            values["overlap"] = 0.0
        return TilingConfig(**values)

    # -- copies ----------------------------------------------------------------------------------
    def updated(self, **changes: Any) -> "ExportConfig":
        """A validated copy with ``changes`` (field names, or ``preprocess=`` / ``tiling=``)."""
        return _validated({**dict(self), **changes})

    def with_text(self, texts: dict[str, str], names: Callable[[str], str] | None = None) -> "ExportConfig":
        """A copy with fields given as text (the command line's and the specs' syntax)."""
        return from_text(texts, dict(self), names or flag)

    def with_spec(self, spec: str) -> "ExportConfig":
        """A copy with the fields an ``--auto`` candidate spec names (``'size=320 tiles=2x2'``)."""
        return self.with_text(parse_spec(spec), names=spec_key)

    # -- the manifest ----------------------------------------------------------------------------
    def manifest_section(self) -> dict[str, Any]:
        """The fields that describe the model, as JSON (the manifest's ``export`` section)."""
        return self.model_dump(mode="json", include=set(stored_fields()))

    @classmethod
    def from_manifest(cls, manifest: Manifest, **run: Any) -> "ExportConfig":
        """The configuration an artifact was exported with, plus the run settings ``run`` (data,
        out, threads...): its ``export`` section, or for older artifacts the same settings from
        where they recorded them."""
        section = manifest.export
        if section is None:
            recorded = manifest.model_dump(mode="json", exclude_unset=True)
            section = {}
            for field in stored_fields():
                option = option_of(field)
                found, value = _lookup(recorded, option.legacy)
                if found:
                    section[field] = value
                elif option.legacy and option.unrecorded is not None:
                    section[field] = option.unrecorded
        return _validated({**section, **run}, "the manifest's export section")


# -- field metadata -----------------------------------------------------------------------------
def option_of(field: str) -> Option:
    info = ExportConfig.model_fields[field]
    return next((m for m in info.metadata if isinstance(m, Option)), Option())


def stored_fields() -> list[str]:
    return [f for f in ExportConfig.model_fields if option_of(f).stored]


def flag(field: str) -> str:
    return option_of(field).flag or "--" + field.replace("_", "-")


def spec_key(field: str) -> str:
    return option_of(field).spec or field


def as_text(field: str, value: Any) -> str:
    option = option_of(field)
    return option.text(value) if option.text else str(value)


def _choices(field: str) -> tuple | None:
    annotation = ExportConfig.model_fields[field].annotation
    return get_args(annotation) if get_origin(annotation) is Literal else None


def _inferred_units(roi) -> str:
    return "fraction" if roi is not None and all(0 <= v <= 1 for v in roi) else "px"


def _lookup(tree: dict, path: str | None) -> tuple[bool, Any]:
    if path is None:
        return False, None
    node: Any = tree
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return False, None
        node = node[key]
    return True, node


def _validated(values: dict, source: str = "", names: Callable[[str], str] = flag) -> ExportConfig:
    """ExportConfig from ``values``; ConfigError naming each bad field (as ``names`` writes it)."""
    try:
        return ExportConfig.model_validate(values)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            field = str(e["loc"][0]) if e["loc"] else ""
            where = names(field) if field in ExportConfig.model_fields else (field or source)
            problems.append(f"{where}: {e['msg']}".replace("Value error, ", ""))
        raise ConfigError("; ".join(problems)) from None


# -- the command line and the spec syntax -------------------------------------------------------
def add_options(parser: argparse.ArgumentParser) -> None:
    """One option per field of :class:`ExportConfig`, generated from the fields."""
    for field, info in ExportConfig.model_fields.items():
        name = flag(field)
        if info.annotation is bool:
            action = "store_false" if name.startswith("--no-") else "store_true"
            parser.add_argument(name, dest=field, action=action, default=argparse.SUPPRESS, help=info.description)
            continue
        default = "" if info.is_required() or info.default is None else f" (default {as_text(field, info.default)})"
        parser.add_argument(name, dest=field, required=info.is_required(), default=argparse.SUPPRESS,
                            choices=_choices(field), metavar=option_of(field).metavar,
                            help=f"{info.description}{default}")


def from_text(texts: dict[str, str], values: dict[str, Any] | None = None,
              names: Callable[[str], str] = flag) -> ExportConfig:
    """ExportConfig from fields given as text (parsed as :class:`Option` says) over ``values``."""
    changes = {}
    for field, text in texts.items():
        option = option_of(field)
        try:
            changes[field] = option.parse(text) if option.parse else text
        except (argparse.ArgumentTypeError, ConfigError, ValueError) as exc:
            raise ConfigError(f"{names(field)}: {exc}") from None
    return _validated({**(values or {}), **changes}, names=names)


def from_args(args: argparse.Namespace) -> ExportConfig:
    """The configuration from arguments parsed with :func:`add_options`."""
    given = {f: v for f, v in vars(args).items() if f in ExportConfig.model_fields}
    return from_text({f: v for f, v in given.items() if not isinstance(v, bool)},
                     {f: v for f, v in given.items() if isinstance(v, bool)})


def to_args(cfg: ExportConfig) -> list[str]:
    """Command-line arguments that give ``cfg`` (fields at their defaults left out)."""
    argv = []
    for field, info in ExportConfig.model_fields.items():
        value = getattr(cfg, field)
        if not info.is_required() and value == info.default:
            continue
        argv += [flag(field)] if info.annotation is bool else [flag(field), as_text(field, value)]
    return argv


def parse_spec(text: str) -> dict[str, str]:
    """'size=320 tiles=2x2 coreset=0.01' -> {field: text}; ConfigError on unknown keys."""
    fields = {spec_key(f): f for f in stored_fields()}
    out = {}
    for item in text.split():
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            raise ConfigError(f"configuration {text!r}: {item!r} is not key=value with key one of "
                              f"{', '.join(fields)}")
        out[fields[key]] = value
    return out


def spec_of(cfg: ExportConfig) -> str:
    """The candidate spec that gives ``cfg`` from the defaults (stored fields only)."""
    defaults = {f: ExportConfig.model_fields[f].default for f in stored_fields()}
    return " ".join(f"{spec_key(f)}={as_text(f, getattr(cfg, f))}" for f in stored_fields()
                    if getattr(cfg, f) != defaults[f])
