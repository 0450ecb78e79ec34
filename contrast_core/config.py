"""RunConfig: one frozen, validated, JSON-serialisable description of a training run."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from contrast_core import cgroups, folders, rules

MAX_SNAPSHOTS = 200  # a run's snapshots, each a file on disk (about 12 kB each for the default run)
MAX_MARGIN = 10_000.0
MEMORY_SHARE = 0.8  # of the free memory one run's step may take
VAE_KNOBS = ("beta", "contrastive_weight", "contrast_on")
AAE_KNOBS = ("contrastive_weight", "adversarial_weight", "prior")
TOY_KNOBS = ("noise", "n_samples")
TOY_DATASETS = ("moons", "blobs", "circles")
CONTINUOUS_DATASETS = ("diabetes",)  # a continuous target: items are similar within `delta` of each other
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
    csv_continuous: bool = False  # the label column is a continuous target (items similar within `delta`)
    data_path: str | None = None  # folder only: one sub-folder of images per class
    image_size: int = Field(32, ge=folders.MIN_SIZE, le=folders.MAX_SIZE)  # folder only: pixels a side, as CIFAR-10
    eval_size: int = Field(500, ge=10, le=20_000)  # held-out points embedded at every snapshot
    # A continuous target: two items are similar when their targets differ by at most delta (target units).
    # None: a quarter of the training targets' standard deviation.
    delta: float | None = Field(None, gt=0, allow_inf_nan=False)
    # model
    model: str = "mlp"
    embedding_dim: int = Field(2, ge=2, le=1024)  # 2: the scatter is the embedding itself
    weights: str | None = None  # local resnet18 state dict, if the user has one
    # objective
    loss: str = "contrastive"
    # None (or left out): the loss's natural distance, cosine for nt-xent / supcon / cosine-embedding,
    # euclidean for contrastive / triplet. Always a name once the config is built.
    distance: str | None = None
    # In the distance's units; a similarity in [-1, 1] for cosine-embedding. Left out (or None): the loss's
    # default for its distance (1 Euclidean, 0.5 cosine, 0 for cosine-embedding as in torch).
    margin: float = 1.0
    # contrastive / triplet: average over every term, or over the non-zero ones (pytorch-metric-learning)
    reduction: Literal[rules.REDUCTIONS] = "mean"
    # nt-xent / supcon: 0.1 as in SimCLR's best runs; below 0.001 the logits (similarity / temperature) overflow
    temperature: float = Field(0.1, ge=0.001, le=10)
    sampler: str = "random-pairs"
    m_per_class: int = Field(4, ge=2, le=256)  # class-balanced samplers: items per class in a batch
    augment: float = Field(0.0, ge=0, le=1)  # strength of per-sample augmentation; 0 = none
    # augmented-views + supcon: the share of each class's training items labelled (the others each a class
    # of its own): 0 is self-supervised (SupCon is then NT-Xent), 1 supervised. None: no labels.
    label_fraction: float | None = Field(None, ge=0, le=1)
    # VAE
    beta: float = Field(1.0, ge=0, le=100)  # weight of the KL term
    contrastive_weight: float = Field(1.0, ge=0, le=1000)
    contrast_on: Literal["mu", "z"] = "mu"
    # AAE (contrastive_weight as the VAE's): the generator term's weight, 0 = the prior is not enforced
    adversarial_weight: float = Field(1.0, ge=0, le=1000)
    prior: Literal["gaussian", "mixture"] = "gaussian"  # N(0, I), or one Gaussian mode per class
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
    steps_per_second: float = Field(0.0, ge=0, le=1000)  # slow motion: at most this many steps a second; 0 = no limit

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
        if abs(v) > MAX_MARGIN:  # a larger one only scales the embedding up, until its squares overflow float32
            raise ValueError(f"must be at most {MAX_MARGIN:,g}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _natural_distance(cls, values):
        """A run that names no distance gets its loss's natural one, and one that names no margin the
        loss's default margin for that distance (a cosine-embedding margin of 1, a similarity, pushes no
        negative apart); an explicit choice is kept."""
        if not isinstance(values, dict):
            return values
        loss = rules.LOSSES.get(values.get("loss", cls.model_fields["loss"].default))
        if loss is None:  # an unknown loss is reported by _consistent
            return values
        if values.get("distance") is None:
            values = values | {"distance": loss.natural_distance}
        if values.get("margin") is None and "margin" in loss.knobs:
            metric = values["distance"] if isinstance(values["distance"], str) else None
            values = values | {"margin": loss.default_margin(metric if metric in rules.DISTANCES else None)}
        return values

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        _check_name("dataset", self.dataset, rules.DATASETS)
        _check_name("model", self.model, rules.MODELS)
        _check_name("loss", self.loss, rules.LOSSES)
        _check_name("distance", self.distance, rules.DISTANCES)
        _check_name("sampler", self.sampler, rules.SAMPLERS)
        loss = self.loss_class
        sampler = rules.SAMPLERS[self.sampler]
        if loss.kind not in sampler.kinds | sampler.labelled_kinds:
            fits = [name for name, s in rules.SAMPLERS.items() if loss.kind in s.kinds]
            fits += [f"{name} with a label_fraction" for name, s in rules.SAMPLERS.items() if loss.kind in s.labelled_kinds]  # fmt: skip
            raise ValueError(f"sampler: '{self.sampler}' cannot feed the '{self.loss}' loss (use {', '.join(fits)})")
        if self.label_fraction is not None or loss.kind not in sampler.kinds:
            self._check_label_fraction(sampler)
        limits = loss.margin_limits(self.distance)
        if limits is not None and not limits[0] <= self.margin <= limits[1]:
            low, high = limits
            where = f">= {low:g}" if high == math.inf else f"in [{low:g}, {high:g}]"
            raise ValueError(f"margin: must be {where} (the {self.loss} margin is a {loss.margin_unit(self.distance)})")
        if self.sampler == "augmented-views" and self.augment == 0:
            raise ValueError(
                "augment: the augmented-views sampler needs augment > 0 (two identical views teach nothing)"
            )
        if self.dataset == "csv" and not self.csv_path:
            raise ValueError("csv_path: the csv dataset needs a file")
        if self.dataset == "folder" and not self.data_path:
            raise ValueError("data_path: the folder dataset needs a folder of images, one sub-folder per class")
        if -(-self.steps // self.resolved_snapshot_every()) + 1 > MAX_SNAPSHOTS:  # the last step's is extra
            least = math.ceil(self.steps / (MAX_SNAPSHOTS - 1))
            raise ValueError(f"snapshot_every: at least {least:,} for {self.steps:,} steps "
                             f"(at most {MAX_SNAPSHOTS} snapshots a run)")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _prior(self) -> RunConfig:
        """The AAE's mixture prior has one mode per class: it needs every item's class."""
        if self.model != "aae" or self.prior != "mixture":
            return self
        if self.continuous:
            raise ValueError(f"prior: the mixture has one mode per class; {self.dataset} has a continuous target "
                             "(use gaussian)")  # fmt: skip
        if self.label_fraction is not None:
            raise ValueError("prior: the mixture shows the discriminator every item's class; a label_fraction "
                             "hides most of them (use gaussian)")  # fmt: skip
        return self

    def _check_label_fraction(self, sampler: type[rules.Sampler]) -> None:
        """A label_fraction labels part of a sampler's items (one with `labelled_kinds`) for a loss of such a
        kind, on data with classes; such a loss on such a sampler needs one."""
        if self.label_fraction is None:
            raise ValueError(f"label_fraction: the {self.loss} loss on {self.sampler} needs one "
                             "(0: no item labelled, as NT-Xent; 1: every item, supervised)")  # fmt: skip
        if not sampler.labelled_kinds:
            fits = [name for name, s in rules.SAMPLERS.items() if s.labelled_kinds]
            raise ValueError(f"label_fraction: the {self.sampler} sampler labels every item or none "
                             f"(use {', '.join(fits)})")  # fmt: skip
        if self.loss_kind not in sampler.labelled_kinds:
            fits = [name for name, loss in rules.LOSSES.items() if loss.kind in sampler.labelled_kinds]
            raise ValueError(f"label_fraction: the {self.loss} loss takes no labels on {self.sampler} "
                             f"(use {', '.join(fits)})")  # fmt: skip
        if self.continuous:
            raise ValueError(f"label_fraction: needs classes; {self.dataset} has a continuous target")

    @property
    def loss_class(self) -> type[rules.Objective]:
        """The loss's class: the one source of its rules (knobs, distance, margin, collapse)."""
        return rules.LOSSES[self.loss]

    @property
    def loss_kind(self) -> str:
        return self.loss_class.kind

    @property
    def measured_distance(self) -> str:
        """The distance the loss measures with (cosine-embedding: always the cosine)."""
        return self.loss_class.measures_with(self.distance)

    @property
    def margin_distance(self) -> float | None:
        """The margin in the units of `measured_distance`; None for losses without a margin."""
        return self.loss_class.margin_as_distance(self.margin)

    def collapsed_loss(self) -> float | None:
        """The loss a collapsed embedding (every distance 0) pays in this run, where the recipe fixes it."""
        sampler = rules.SAMPLERS[self.sampler]
        if not sampler.finds_on_collapse:
            return 0.0  # nothing is mined, so nothing is paid
        items = self.batch_size if self.loss_kind == "views" else None  # class-balanced batch sizes vary
        if items is None and self.loss_kind == "labels":
            return None
        return self.loss_class.collapsed_loss(self.margin, self.reduction, sampler.negative_share, items or 0)

    def peak_bytes(self) -> int:
        """An upper estimate of one training step's memory beyond the model and data (see rules.Sampler.peak_bytes)."""
        sampler = rules.SAMPLERS[self.sampler]
        return sampler.peak_bytes(self.batch_size, self.m_per_class, self.embedding_dim, self.loss_class.kind)

    def memory_refusal(self, available: int, where: str) -> str | None:
        """Why this run would not fit in `available` bytes of `where` ("this machine", a GPU's name), or None."""
        need = self.peak_bytes()
        if need <= MEMORY_SHARE * available:
            return None
        return (f"batch_size: a step of {self.sampler} {self.loss_class.kind} at batch {self.batch_size:,} needs "
                f"about {_size(need)}, more than {where}'s {_size(available)} free; use a smaller batch"
                + (" or batch-hard" if self.sampler in ("batch-all", "semi-hard") else ""))  # fmt: skip

    @property
    def continuous(self) -> bool:
        """Whether the run's data has a continuous target (items similar within `delta`), not classes."""
        return self.dataset in CONTINUOUS_DATASETS or (self.dataset == "csv" and self.csv_continuous)

    def resolved_snapshot_every(self) -> int:
        return self.snapshot_every or max(1, self.steps // 40)

    def resolved_checkpoint_every(self) -> int:
        return self.checkpoint_every or max(1, self.steps // 4)

    def unused(self) -> set[str]:
        """The knobs this run does not read (a loss's, a model's, a dataset's own), whatever their values."""
        unused = {"margin", "temperature", "distance", "reduction"} - self.loss_class.knobs
        own = {"vae": VAE_KNOBS, "aae": AAE_KNOBS}.get(self.model, ())
        unused |= {*VAE_KNOBS, *AAE_KNOBS} - set(own)
        if self.dataset not in TOY_DATASETS:
            unused |= set(TOY_KNOBS)
        if not self.continuous:
            unused.add("delta")
        if self.dataset != "csv":
            unused.add("csv_continuous")
        if self.sampler not in CLASS_BALANCED:
            unused.add("m_per_class")
        return unused

    def notes(self) -> list[str]:
        """One line for each knob set away from its default that this run does not use."""
        unused = self.unused()
        defaults = {name: info.default for name, info in RunConfig.model_fields.items()}
        defaults["distance"] = self.loss_class.natural_distance
        return [
            f"{field} is not used by this run ({self.loss} loss, {self.model} model, {self.dataset} data); ignored"
            for field in sorted(unused)
            if getattr(self, field) != defaults[field]
        ]

    @classmethod
    def check(cls, **values) -> RunConfig:
        """Build a config, or raise ConfigError naming each bad field.

        A new run's image folder must be there too, with classes a run can train on (`folders.check_folder`,
        from the file names); a stored run's config is read with `model_validate`, which does not look (its
        folder may have gone since: the run's data then says so, not its config).
        """
        try:
            config = cls(**values)
        except ValidationError as exc:
            raise ConfigError(_field_errors(exc)) from None
        if config.dataset == "folder":
            if not Path(config.data_path).is_dir():
                raise ConfigError({"data_path": "not a folder on this machine"})
            try:
                folders.check_folder(config.data_path, config.image_size)
            except ValueError as exc:  # "data_path: class 'dogs' has 3 images; ..."
                field, _, reason = str(exc).partition(": ")
                raise ConfigError({field: reason}) from None
        return config


def _size(n: float) -> str:
    """Bytes for a person: "512 MB", "10.2 GB", "2,622,368 GB"."""
    if n < 2**30:
        return f"{n / 2**20:.0f} MB"
    return f"{n / 2**30:.1f} GB" if n < 100 * 2**30 else f"{n / 2**30:,.0f} GB"


def available_memory() -> int:
    """Bytes this process can still take: MemAvailable, or less where its cgroup's limit (a container's)
    leaves less room; the machine's total where neither is known."""
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        free = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limited = cgroups.room(cgroups.memory_cgroup())
    return free if limited is None else min(free, limited)


def _check_name(field: str, value: str, registry) -> None:
    if value not in registry:
        raise ValueError(f"{field}: unknown '{value}' (choose from {', '.join(registry)})")


def _field_errors(exc: ValidationError) -> dict[str, str]:
    """{field: reason} in a person's words: pydantic's "Input should be greater than or equal to 1" is
    "at least 1", on every surface (form, link, sweep, command line)."""
    errors: dict[str, str] = {}
    for err in exc.errors():
        message = err["msg"].removeprefix("Value error, ")
        if err["loc"]:
            field = str(err["loc"][0])
        else:  # a cross-field check: its message starts with "field: "
            field, _, message = message.partition(": ")
        plain = _PLAIN.get(err["type"])
        errors.setdefault(field, plain(err.get("ctx", {})) if plain else message)
    return errors


def _number(value: float) -> str:
    """1000000 -> "1,000,000", 1.0 -> "1", 0.001 -> "0.001"."""
    return f"{int(value):,}" if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


_PLAIN = {  # pydantic's error type -> the reason, from its context
    "greater_than_equal": lambda ctx: f"at least {_number(ctx['ge'])}",
    "less_than_equal": lambda ctx: f"at most {_number(ctx['le'])}",
    "greater_than": lambda ctx: f"more than {_number(ctx['gt'])}",
    "float_parsing": lambda ctx: "not a number",
    "float_type": lambda ctx: "not a number",
    "int_parsing": lambda ctx: "not a whole number",
    "int_type": lambda ctx: "not a whole number",
    "int_from_float": lambda ctx: "a whole number",
    "bool_parsing": lambda ctx: "true or false",
    "finite_number": lambda ctx: "a finite number",
    "extra_forbidden": lambda ctx: "unknown setting",
}
