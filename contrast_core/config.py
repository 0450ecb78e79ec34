"""RunConfig: one frozen, validated, JSON-serialisable description of a training run."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from contrast_core import data, distances, losses, models, samplers

VAE_KNOBS = ("beta", "contrastive_weight", "contrast_on")
TOY_KNOBS = ("noise", "n_samples")
TOY_DATASETS = ("moons", "blobs", "circles")
CLASS_BALANCED = ("batch-all", "batch-hard", "semi-hard")


class ConfigError(ValueError):
    """Invalid configuration; `errors` maps each bad field to a one-line reason."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{field}: {reason}" for field, reason in errors.items()))


class RunConfig(BaseModel):
    """Every knob of a run. Defaults are the classic Siamese recipe on `digits`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # data
    dataset: str = "digits"  # bundled with scikit-learn: works offline
    noise: float = Field(0.1, ge=0, le=1)  # toy sets only
    n_samples: int = Field(1000, ge=20, le=100_000)  # toy sets only
    csv_path: str | None = None
    csv_label: str = "label"
    eval_size: int = Field(500, ge=10, le=20_000)  # held-out points embedded at every snapshot
    # model
    model: str = "mlp"
    embedding_dim: int = Field(2, ge=2, le=1024)  # 2: the scatter is the embedding itself
    weights: str | None = None  # local resnet18 state dict, if the user has one
    # objective
    loss: str = "contrastive"
    distance: str = "euclidean"
    margin: float = 1.0  # in the distance's units; a similarity in [-1, 1] for cosine-embedding
    temperature: float = Field(0.1, gt=0, le=10)  # nt-xent / supcon: 0.1 as in SimCLR's best runs
    sampler: str = "random-pairs"
    m_per_class: int = Field(4, ge=2, le=256)  # class-balanced samplers: items per class in a batch
    augment: float = Field(0.0, ge=0, le=1)  # strength of per-sample augmentation; 0 = none
    # VAE
    beta: float = Field(1.0, ge=0, le=100)  # weight of the KL term
    contrastive_weight: float = Field(1.0, ge=0, le=1000)
    contrast_on: Literal["mu", "z"] = "mu"
    # optimisation
    batch_size: int = Field(100, ge=2, le=65_536)  # pairs (random-pairs), items (others)
    steps: int = Field(2000, ge=1, le=1_000_000)
    lr: float = 1e-3  # Adam
    seed: int = Field(0, ge=0, le=2**31 - 1)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    # bfloat16: the model's matrix products run in bfloat16 (weights, Adam and the loss stay
    # float32): about 1.4x the steps/s on a CPU with AVX-512 BF16, tensor cores on a GPU.
    precision: Literal["float32", "bfloat16"] = "float32"
    snapshot_every: int = Field(0, ge=0)  # 0: about 40 snapshots per run
    checkpoint_every: int = Field(0, ge=0)  # 0: four checkpoints per run, plus the last step

    @field_validator("lr")
    @classmethod
    def _lr(cls, v: float) -> float:
        if not math.isfinite(v) or v <= 0:
            raise ValueError("must be a finite number > 0")
        return v

    @field_validator("margin")
    @classmethod
    def _margin_finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        _check_name("dataset", self.dataset, data.DATASETS)
        _check_name("model", self.model, models.MODELS)
        _check_name("loss", self.loss, losses.LOSSES)
        _check_name("distance", self.distance, distances.DISTANCES)
        _check_name("sampler", self.sampler, samplers.SAMPLERS)
        kind = losses.LOSSES[self.loss].kind
        if kind not in samplers.SAMPLERS[self.sampler].kinds:
            fits = [name for name, s in samplers.SAMPLERS.items() if kind in s.kinds]
            raise ValueError(f"sampler: '{self.sampler}' cannot feed the '{self.loss}' loss (use {', '.join(fits)})")
        if self.loss == "cosine-embedding":
            if not -1 <= self.margin <= 1:
                raise ValueError("margin: the cosine-embedding margin is a similarity in [-1, 1]")
        elif self.margin < 0:
            raise ValueError("margin: must be >= 0")
        elif self.distance == "cosine" and self.margin > 2 and "margin" in losses.LOSS_KNOBS[self.loss]:
            raise ValueError("margin: a cosine distance lies in [0, 2], so its margin must too")
        if self.sampler == "augmented-views" and self.augment == 0:
            raise ValueError(
                "augment: the augmented-views sampler needs augment > 0 (two identical views teach nothing)"
            )
        if self.dataset == "csv" and not self.csv_path:
            raise ValueError("csv_path: the csv dataset needs a file")
        return self

    @property
    def loss_kind(self) -> str:
        return losses.LOSSES[self.loss].kind

    def resolved_snapshot_every(self) -> int:
        return self.snapshot_every or max(1, self.steps // 40)

    def resolved_checkpoint_every(self) -> int:
        return self.checkpoint_every or max(1, self.steps // 4)

    def notes(self) -> list[str]:
        """One line for each knob set away from its default that this run does not use."""
        unused = {"margin", "temperature", "distance"} - losses.LOSS_KNOBS[self.loss]
        if self.model != "vae":
            unused |= set(VAE_KNOBS)
        if self.dataset not in TOY_DATASETS:
            unused |= set(TOY_KNOBS)
        if self.sampler not in CLASS_BALANCED:
            unused.add("m_per_class")
        defaults = RunConfig.model_fields
        return [
            f"{field} is not used by this run ({self.loss} loss, {self.model} model, {self.dataset} data); ignored"
            for field in sorted(unused)
            if getattr(self, field) != defaults[field].default
        ]

    @classmethod
    def check(cls, **values) -> RunConfig:
        """Build a config, or raise ConfigError naming each bad field."""
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ConfigError(_field_errors(exc)) from None


def _check_name(field: str, value: str, registry) -> None:
    if value not in registry:
        raise ValueError(f"{field}: unknown '{value}' (choose from {', '.join(registry)})")


def _field_errors(exc: ValidationError) -> dict[str, str]:
    errors: dict[str, str] = {}
    for err in exc.errors():
        message = err["msg"].removeprefix("Value error, ")
        if err["loc"]:
            field = str(err["loc"][0])
        else:  # a cross-field check: its message starts with "field: "
            field, _, message = message.partition(": ")
        if err["type"] == "extra_forbidden":
            message = "unknown setting"
        errors.setdefault(field, message)
    return errors
