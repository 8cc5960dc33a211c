"""Training configuration: a YAML file validated by pydantic, with clear errors naming keys."""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lvt_core.labels import CHANNELS
from lvt_core.precision import Precision
from training.augment import CONTRAST_RANGE_HU, SYNTHETIC_DIAMETER_MM, ContrastSampling

Mode = Literal["ML", "MLx", "MC"]


class ConfigError(ValueError):
    """A config file that is missing, unreadable or invalid; names the file and the key."""


class DatasetSpec(BaseModel):
    """One training source: a registered source name, its folder and its sampling weight."""

    model_config = ConfigDict(extra="forbid")
    source: str
    path: Path
    # chance of drawing this entry (against the other entries' weights); its cases are then
    # drawn uniformly, so a small cohort with a large weight is seen more per case
    weight: float = Field(1.0, ge=0)
    optional: bool = False  # skip (with a warning) when the folder is absent
    options: dict[str, Any] = Field(default_factory=dict)
    generate: dict[str, Any] | None = None  # phantom cohort parameters when path is empty


class OptimizerSpec(BaseModel):
    """AdamW with linear warm-up and cosine decay, or SGD Nesterov with poly decay."""

    model_config = ConfigDict(extra="forbid")
    name: Literal["adamw", "sgd"] = "sgd"
    lr: float = Field(0.01, gt=0)
    weight_decay: float = Field(3e-5, ge=0)
    momentum: float = 0.99
    warmup_steps: int = Field(0, ge=0)
    poly_exponent: float = 0.9
    grad_clip: float = 12.0


class TrainConfig(BaseModel):
    """Everything a training run needs; stored with the run and in the checkpoint."""

    model_config = ConfigDict(extra="forbid")
    name: str = "lvt"
    version: str = "0.1.0"
    mode: Mode = "ML"
    seed: int = 0
    output_dir: Path = Path("runs/lvt")
    cache_dir: Path | None = None
    datasets: list[DatasetSpec]
    spacing_mm: list[float] = Field(default_factory=lambda: [1.5, 1.5, 1.5])
    patch_size: list[int] = Field(default_factory=lambda: [96, 96, 96])  # x, y, z
    batch_size: int = Field(2, ge=1)
    epochs: int = Field(10, ge=1)
    steps_per_epoch: int = Field(50, ge=1)
    checkpoint_every: int = Field(25, ge=1)
    network: dict[str, Any] = Field(default_factory=dict)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    window: dict[str, float] | None = None
    domain_randomization: float = Field(1.0, ge=0)
    # Per patch and structure (vessel, tumor): chance to re-draw its contrast to the liver,
    # darker or brighter (training/augment.randomize_relative_contrast). 0 keeps the phantom's.
    contrast_randomization: float = Field(0.0, ge=0, le=1)
    # Magnitude range (HU) of that re-drawn contrast; a low bound near 0 also teaches faint lesions.
    contrast_range_hu: tuple[float, float] = CONTRAST_RANGE_HU
    # How that magnitude is drawn: uniform in HU, or log_uniform (as many faint as strong ones).
    contrast_sampling: ContrastSampling = "uniform"
    # Per patch: chance to insert small labelled lesions (synthetic_lesion_diameter_mm) into liver
    # (training/augment.insert_synthetic_lesions); 0 keeps the phantom's lesions only.
    synthetic_lesions: float = Field(0.0, ge=0, le=1)
    # Diameter range (mm) of those inserted lesions.
    synthetic_lesion_diameter_mm: tuple[float, float] = SYNTHETIC_DIAMETER_MM
    # Of those inserted lesions, the share placed against a vessel.
    synthetic_near_vessel: float = Field(0.0, ge=0, le=1)
    # Tumors fainter than this many noise SDs of a same-size liver region are labelled liver
    # (training/augment.relabel_invisible_lesions); 0 keeps every labelled lesion.
    min_lesion_detectability: float = Field(0.0, ge=0)
    augment: bool = True
    fold: int = -1
    n_folds: int = 5
    max_val_cases: int = 8
    val_overlap: float = 0.25
    fp16_checkpoint: bool = True
    num_threads: int | None = None
    # Processes that build batches ahead of the network; unset: none on a CPU, up to 8 beside a
    # GPU. Cohort generation and the preprocessing cache use them, or every core (up to 8)
    # when batches are built in the loop (training.loader).
    data_workers: int | None = Field(None, ge=0)
    # auto: fp16 AMP on CUDA, float32 on CPU; bf16: bfloat16 autocast (CPUs with AMX/AVX-512 BF16).
    precision: Precision = "auto"
    tensorboard: bool = False
    # Start from these weights (fine-tuning), e.g. a shorter earlier run of the same network.
    init_checkpoint: Path | None = None
    # Probability that a patch is centred on a voxel of an annotated class (nnU-Net: 1/3).
    foreground_prob: float = Field(1 / 3, ge=0, le=1)
    # Relative chance of each class being the foreground a patch is centred on (default equal).
    foreground_class_weights: dict[str, float] | None = None
    # Centre tumor patches on a uniformly chosen lesion, then a voxel of it (small lesions are
    # otherwise outnumbered by the voxels of big ones); False samples tumor voxels uniformly.
    lesion_balanced_sampling: bool = False
    # Low-pass the CT before resampling it to spacing_mm (lvt_core.grids.antialias), in
    # training and, through the checkpoint's preprocessing.antialiased, at inference.
    antialiased: bool = False
    # Soft Dice summed over the batch before the ratio (nnU-Net's batch_dice) instead of per
    # patch: a tumor-free patch no longer scores any tumor probability as a total miss.
    batch_dice: bool = False

    @field_validator("spacing_mm", "patch_size")
    @classmethod
    def _three(cls, value: list) -> list:
        if len(value) != 3:
            raise ValueError("needs three values (x, y, z)")
        if any(not v > 0 for v in value):
            raise ValueError(f"needs three positive values, got {value}")
        return value

    @field_validator("network")
    @classmethod
    def _known_network_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        """A typo (``filtres``) silently trained the default network: a wasted GPU run."""
        from lvt_core.network import DEFAULT_NETWORK

        unknown = sorted(set(value) - set(DEFAULT_NETWORK) - {"out_channels"})
        if unknown:
            raise ValueError(f"unknown key(s) {unknown}; known: {sorted(DEFAULT_NETWORK)}")
        return value

    @field_validator("foreground_class_weights")
    @classmethod
    def _known_classes(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        unknown = sorted(set(value or {}) - {"liver", "vessel", "tumor"})
        if unknown:
            raise ValueError(f"unknown class(es) {unknown}; use liver, vessel, tumor")
        return value

    @field_validator("window")
    @classmethod
    def _level_and_width(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is not None and set(value) != {"level", "width"}:
            raise ValueError(f"needs exactly the keys level and width, got {sorted(value)}")
        return value

    @field_validator("contrast_range_hu")
    @classmethod
    def _ordered_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= value[0] <= value[1]:
            raise ValueError("needs 0 <= low <= high (HU)")
        return value

    @field_validator("synthetic_lesion_diameter_mm")
    @classmethod
    def _ordered_diameters(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1]:
            raise ValueError("needs 0 < low <= high (mm)")
        return value

    @model_validator(mode="after")
    def _batch_dice_needs_sigmoid(self) -> TrainConfig:
        if self.batch_dice and self.mode == "MC":
            raise ValueError("batch_dice is for the sigmoid modes (ML, MLx), not MC")
        return self

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def out_channels(self) -> int:
        return len(CHANNELS) + 1 if self.mode == "MC" else len(CHANNELS)

    @property
    def label_space(self) -> str:
        return "multiclass" if self.mode == "MC" else "multilabel"


class DuplicateKeyError(yaml.YAMLError):
    """A mapping that names one key twice; PyYAML silently keeps the last value."""

    def __init__(self, key: Any, line: int) -> None:
        super().__init__(f"line {line}: duplicate key {key!r}")
        self.key, self.line = key, line


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: ``epochs: 3`` then ``epochs: 5`` trained 5."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in seen:
                raise DuplicateKeyError(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _check_dataset_options(config: TrainConfig, path: Path) -> None:
    """Each dataset's ``options`` against its importer's signature, naming the key."""
    from training.datasets import DatasetError, get_source

    for index, spec in enumerate(config.datasets):
        if not spec.options:
            continue
        try:
            source = get_source(spec.source)
        except DatasetError:
            continue  # an unknown source is reported, with the known names, when cases are gathered
        unknown = source.unknown_options(spec.options)
        if unknown:
            raise ConfigError(f"{path}: datasets.{index}.options.{unknown[0]}: unknown option "
                              f"({source.describe_known_options()})")


def load_config(path: str | Path, **overrides: Any) -> TrainConfig:
    """Read and validate a YAML config; ``overrides`` replace top-level keys."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except DuplicateKeyError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        config = TrainConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        where = f"{key}: " if key else ""  # a check across keys has no single key to name
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{path}: {where}{message} ({exc.error_count()} error(s))") from None
    _check_dataset_options(config, path)
    return config
