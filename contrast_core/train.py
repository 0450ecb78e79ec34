"""The training loop: a plain loop, no threads, no UI. It reports through `on_event`."""

from __future__ import annotations

import copy
import functools
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from threadpoolctl import ThreadpoolController

from contrast_core import data, distances, forces, losses, metrics, models, samplers
from contrast_core.augment import augment
from contrast_core.config import RunConfig, available_memory
from contrast_core.projection import project

DIVERGENCE_FACTOR = 1e6  # a loss this many times its first value (or non-finite) means the run diverged
RECON_ITEMS = 16  # originals / reconstructions kept in each VAE snapshot
DECODER_PREFIX = "decoder."  # snapshot arrays holding a VAE decoder's weights, by state-dict name
LATENT_GRID = 12  # a 2-D latent space is decoded on a grid this many points a side at each snapshot
PROBE_TRAIN_ITEMS = 2000  # training points embedded for k-NN / linear-probe metrics
# The metrics that need the whole evaluation set (KMeans, silhouette, Davies-Bouldin, MAP@R: about two
# thirds of a snapshot's time) are measured at every this-many-th snapshot, the first and the last;
# the cheap ones (k-NN, precision@1, pair distances) at every snapshot (metrics.evaluate).
WHOLE_SET_EVERY = 4
GRAPH_WARMUP_STEPS = 3  # eager steps before a CUDA graph is captured
DELTA_SHARE_OF_STD = 0.25  # a continuous target's default delta, in standard deviations of its training targets
HOLD_POLL_SECONDS = 0.05  # a held run asks whether to go on this often
HELD_SNAPSHOTS = 200  # snapshots a run takes where it is held (paused, single-stepped), at most
# Adam's (beta1, beta2) for the AAE's adversarial phase: less momentum, as GANs are usually trained
# (Radford et al. 2016), so that the discriminator and the encoder follow each other's moves.
ADVERSARIAL_BETAS = (0.5, 0.999)


def thread_pools() -> ThreadpoolController:
    """The BLAS and OpenMP pools of the libraries loaded by now. Looking for them costs about 3 ms, a
    sixth of a cheap snapshot, so they are looked for again only once a module was imported since (a
    library with its own pool comes with the module that loads it: numba's OpenMP layer, say)."""
    return _thread_pools(len(sys.modules))


@functools.lru_cache(maxsize=1)
def _thread_pools(modules: int) -> ThreadpoolController:
    return ThreadpoolController()


@dataclass
class Event:
    """What the loop reports: kind is "start", "step", "snapshot", "checkpoint", "final" or "error"."""

    kind: str
    step: int
    data: dict = field(default_factory=dict)


class TrainingError(RuntimeError):
    """A run that cannot go on (its message is one line, for the user)."""


def resolve_device(name: str) -> torch.device:
    """ "auto" picks cuda, then mps, then cpu; an explicit device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device: cuda was asked for but no CUDA GPU is available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise TrainingError("device: mps was asked for but is not available")
    return torch.device(name)


def memory_refusal(config: RunConfig, device: torch.device) -> str | None:
    """Why a step of this run would not fit in the device's free memory (RunConfig.peak_bytes), or None."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return config.memory_refusal(free, device_label(device))
    return config.memory_refusal(available_memory(), "this machine")


def resolve_delta(delta: float | None, dataset: data.Dataset) -> float | None:
    """A continuous target's similarity width: `delta`, or a quarter of the training targets' standard
    deviation; None for a dataset of classes. Raises TrainingError if every pair of training targets
    would be similar (no negatives to learn from)."""
    if dataset.target is None:
        return None
    train = dataset.target[dataset.train_index]
    delta = delta if delta is not None else DELTA_SHARE_OF_STD * float(train.std())
    spread = float(train.max() - train.min())
    if delta >= spread:
        raise TrainingError(f"delta: {delta:g} makes every pair similar (the training targets span {spread:g}); "
                            "choose less")  # fmt: skip
    return delta


def device_label(device: torch.device) -> str:
    """A person-readable device name: the GPU's model, or "cpu"."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


class Trainer:
    """Everything a run holds: data on the device, model, optimiser, loss, sampler, RNG."""

    def __init__(
        self, config: RunConfig, resume: dict | None = None, dataset: data.Dataset | None = None, graphs: bool = True
    ):
        self.config = c = config
        self.device = resolve_device(c.device)
        torch.manual_seed(c.seed)
        self.generator = torch.Generator(self.device).manual_seed(c.seed)
        self.data = dataset.to(self.device) if dataset is not None else data.load(
            c.dataset, seed=c.seed, eval_size=c.eval_size, noise=c.noise, n_samples=c.n_samples,
            csv_path=c.csv_path, csv_label=c.csv_label, csv_continuous=c.csv_continuous, data_path=c.data_path,
            image_size=c.image_size, device=self.device,
        )  # fmt: skip
        self.model = models.build(c.model, self.data.input_shape, c.embedding_dim, c.weights).to(self.device)
        self.delta = resolve_delta(c.delta, self.data)  # None for classes
        self.loss = losses.build(c.loss, c.distance, c.margin, c.temperature, c.reduction, self.delta)
        self.sampler = samplers.build(
            c.sampler, self.data.train_index, self.data.y, c.batch_size, c.m_per_class,
            distance=self.loss.distance, margin=c.margin_distance or 0.0, targets=self.data.target, delta=self.delta,
            label_fraction=c.label_fraction, seed=c.seed,
        )  # fmt: skip
        # On a GPU a small step is all launch overhead: steps whose shapes never change are
        # captured once as a CUDA graph and replayed (one launch per step instead of ~90).
        # The AAE's step is three updates by three optimisers, taken eagerly.
        self.graphed = (
            self.device.type == "cuda" and graphs and self.loss.kind in self.sampler.graph_kinds and c.model != "aae"
        )  # fmt: skip
        # One fused kernel for all parameters: the same update, 1.2-1.3x more steps/s on 2 CPU cores.
        fused = self.device.type in ("cpu", "cuda")
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=c.lr, fused=fused or None, capturable=self.graphed
        )  # fmt: skip
        self.is_vae = c.model in ("vae", "aae")  # the VAE family: a decoder, reconstructions, loss terms
        self.is_aae = c.model == "aae"
        if self.is_aae:
            self._build_adversary(fused)
        if c.precision == "bfloat16" and self.device.type not in ("cpu", "cuda"):
            raise TrainingError(f"precision: bfloat16 runs on cpu and cuda, not {self.device.type}")
        # cache_enabled=False: weight casts are not cached across steps (required under graph capture)
        self.autocast = torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=c.precision == "bfloat16", cache_enabled=False
        )  # fmt: skip
        self.step = 0
        self._graph: torch.cuda.CUDAGraph | None = None
        self._graph_terms: dict[str, torch.Tensor] = {}
        self._warm_steps = 0
        self.capture_seconds = 0.0  # warm-up and capture of the CUDA graph, once per Trainer
        self._pca: np.ndarray | None = None  # the last snapshot's PCA layout, to align the next one to
        probe = torch.randperm(len(self.data.train_index), generator=torch.Generator().manual_seed(c.seed))
        self.probe_index = self.data.train_index[probe[:PROBE_TRAIN_ITEMS].to(self.device)]
        if resume is not None:
            self.load_state(resume)

    # --- one step -------------------------------------------------------------------------
    def train_step(self) -> dict[str, torch.Tensor]:
        """One optimiser step; returns every loss term as a 0-d tensor (not synced to the host).

        A graphed trainer returns the same tensors every step, overwritten by the next one.
        """
        if not self.graphed:
            terms = self._step()
        elif self._graph is not None:
            self._graph.replay()
            terms = self._graph_terms
        elif self._warm_steps < GRAPH_WARMUP_STEPS:
            terms = self._warm_up_step()
        else:
            terms = self._capture()
        self.step += 1
        # Detached: a caller holding them must not keep this step's autograd graph alive
        # (under graph capture that graph would sit on another stream).
        return {name: value.detach() for name, value in terms.items()}

    def _warm_up_step(self) -> dict[str, torch.Tensor]:
        """An eager step on a side stream, as graph capture asks: lazy inits happen off the capture."""
        start = time.perf_counter()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            terms = self._step()
        torch.cuda.current_stream(self.device).wait_stream(side)
        self._warm_steps += 1
        self.capture_seconds += time.perf_counter() - start
        return terms

    def _capture(self) -> dict[str, torch.Tensor]:
        """Records one whole step (draw, forward, loss, backward, Adam) and runs it once."""
        start = time.perf_counter()
        torch.cuda.synchronize(self.device)
        graph = torch.cuda.CUDAGraph()
        graph.register_generator_state(self.generator)  # replays draw fresh batches
        self.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            self._graph_terms = self._step()
        self._graph = graph
        graph.replay()  # capture only records: this is the step itself
        torch.cuda.synchronize(self.device)
        self.capture_seconds += time.perf_counter() - start
        return self._graph_terms

    def _step(self) -> dict[str, torch.Tensor]:
        c, batch = self.config, self.sampler.draw(self.generator)
        x = self.data.x.index_select(0, batch.index)  # (B, *input_shape); faster than x[index] on CPU
        if batch.views or c.augment > 0:
            x = augment(x, max(c.augment, 0.0), self.generator)
        if self.is_aae:  # reconstruction phase; the regularisation phase follows the update
            with self.autocast:
                codes, reconstruction = self.model(x)
            embeddings = codes.float()  # (B, D)
            recon = losses.reconstruction_error(x, reconstruction.float())
            mined = self.sampler.mine(embeddings, batch, self.loss.kind)
            contrastive = self.loss(*mined)
            total = recon + c.contrastive_weight * contrastive
            terms = {"recon": recon, "contrastive": contrastive}
        elif self.is_vae:
            with self.autocast:
                out = self.model(x, self.generator)
            mu, logvar, z, reconstruction = (t.float() for t in (out.mu, out.logvar, out.z, out.recon))
            recon, kl = losses.vae_terms(x, reconstruction, mu, logvar)
            embeddings = mu if c.contrast_on == "mu" else z  # (B, D)
            mined = self.sampler.mine(embeddings, batch, self.loss.kind)
            contrastive = self.loss(*mined)
            total = recon + c.beta * kl + c.contrastive_weight * contrastive
            terms = {"loss": total, "recon": recon, "kl": kl, "contrastive": contrastive}
        else:
            with self.autocast:
                embeddings = self.model(x).float()  # (B, D); the loss is always float32
            mined = self.sampler.mine(embeddings, batch, self.loss.kind)
            total = self.loss(*mined)
            terms = {"loss": total}
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        if self.is_aae:
            adversarial = self._regularise(x, batch)
            total = total + adversarial["discriminator"] + c.adversarial_weight * adversarial["generator"]
            terms = {"loss": total} | terms | adversarial
        self.last_batch = embeddings.detach(), batch.labels  # (B, D), (B,)
        self.last_mined = mined._make(t.detach() for t in mined)  # what the loss saw, for the mining statistics
        return terms

    def _build_adversary(self, fused: bool) -> None:
        """The AAE's prior, its discriminator and the optimisers of its regularisation phase: the
        discriminator's, and the encoder's as the generator (`optimizer` is the reconstruction phase's)."""
        c = self.config
        classes = self.data.num_classes if c.prior == "mixture" else 0  # the mixture: one mode per class
        self.prior = models.Prior(c.embedding_dim, classes, self.device)
        self.discriminator = models.Discriminator(c.embedding_dim, classes).to(self.device)
        adam = functools.partial(torch.optim.Adam, lr=c.lr, betas=ADVERSARIAL_BETAS, fused=fused or None)
        self.discriminator_optimizer = adam(self.discriminator.parameters())
        self.generator_optimizer = adam(self.model.encoder.parameters())

    def _regularise(self, x: torch.Tensor, batch: samplers.Batch) -> dict[str, torch.Tensor]:
        """The AAE's regularisation phase (Makhzani et al. 2015, section 2), after the reconstruction phase's
        update: the discriminator learns to tell the prior's samples (1) from the codes (0), then the encoder,
        as the generator, learns to have its codes taken for the prior's, weighted by `adversarial_weight`.
        With the mixture prior the discriminator sees each item's class, and its sample comes from that mode."""
        labels = self.data.y.index_select(0, batch.index) if self.prior.classes else batch.index  # (B,)
        condition = labels if self.prior.classes else None
        prior = self.prior.sample(labels, self.generator)  # (B, D)
        with self.autocast:
            codes = self.model.encoder(x)  # (B, D), by the encoder as the reconstruction phase left it
            prior_logits = self.discriminator(prior, condition)  # (B,)
            code_logits = self.discriminator(codes.detach(), condition)  # (B,)
        discriminator = losses.discriminator_loss(prior_logits.float(), code_logits.float())
        self.discriminator_optimizer.zero_grad(set_to_none=True)
        discriminator.backward()
        self.discriminator_optimizer.step()
        self.discriminator.requires_grad_(False)  # the generator's gradient reaches the encoder only
        with self.autocast:
            generator = losses.generator_loss(self.discriminator(codes, condition).float())
        self.generator_optimizer.zero_grad(set_to_none=True)
        (self.config.adversarial_weight * generator).backward()
        self.generator_optimizer.step()
        self.discriminator.requires_grad_(True)
        return {"discriminator": discriminator, "generator": generator}

    def batch_distance_stats(self) -> dict[str, float]:
        """Mean positive / negative distance in the last batch, the share of negatives inside the margin,
        and what the miner found (see `mining_shares`).

        Masked sums rather than boolean indexing, and one transfer to the host: it runs every step.
        """
        embeddings, labels = self.last_batch
        d = self.loss.distance.pairwise(embeddings, embeddings)  # (B, B)
        same = losses.similar(labels[:, None], labels[None, :], self.sampler.delta)  # (B, B), the diagonal included
        same_sum = (d * same.to(d.dtype)).sum()
        n = torch.tensor(float(len(labels)), device=d.device)
        n_same = same.sum().to(d.dtype)
        # Positives: same label, the diagonal left out (a matrix-product cdist is not exactly 0 there).
        sums = [same_sum - d.diagonal().sum(), n_same - n, d.sum() - same_sum, n * n - n_same]
        margin = self.config.margin_distance
        if margin is not None:
            sums.append(((d < margin) & ~same).sum().to(d.dtype))
        mining = mining_counts(self.last_mined, self.loss.distance, margin)
        values = torch.stack(sums + list(mining.values())).tolist()  # one transfer to the host
        pos_sum, n_pos, neg_sum, n_neg, *inside = values[: len(sums)]
        nan = float("nan")
        stats = {"pos_distance": pos_sum / n_pos if n_pos else nan, "neg_distance": neg_sum / n_neg if n_neg else nan}
        if inside and n_neg:
            stats["violation_fraction"] = inside[0] / n_neg
        return stats | mining_shares(dict(zip(mining, values[len(sums) :], strict=True)))

    # --- snapshots and state --------------------------------------------------------------
    def snapshot(self, final: bool = False, items: bool = False) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Embeddings of the evaluation subset (+ their PCA, VAE reconstructions) and their metrics;
        with `items`, the evaluation items themselves too (images as uint8), for the pages to show.
        The whole-set metrics are measured at step 0, every WHOLE_SET_EVERY-th snapshot and the final one,
        by step (so a resumed run measures at the same steps); the linear probe at the final one.

        Metrics and the PCA see the embeddings as the loss measures them: unit length for the
        cosine distance, which ignores length. The PCA is aligned to the previous snapshot's.
        """
        ds = self.data
        x_eval, y_eval = ds.x[ds.eval_index], ds.y[ds.eval_index]
        eval_emb = models.embed(self.model, x_eval)  # (E, D)
        arrays = {
            "embeddings": eval_emb.cpu().numpy(),
            "labels": y_eval.cpu().numpy(),
            "index": ds.eval_index.cpu().numpy(),
            "classes": np.array(ds.classes),
        }
        if self.delta is not None:  # a continuous target: what colours the points and judges their pairs
            arrays |= {"targets": ds.target[ds.eval_index].cpu().numpy(), "delta": np.array(self.delta)}
        if items:
            x = x_eval.cpu().numpy()
            arrays["items"] = (x * 255).round().astype(np.uint8) if ds.kind == "image" else x
        distance = self.loss.distance.name
        measured = distances.as_measured(eval_emb, distance).cpu().numpy()
        if self.is_vae:
            arrays.update(self._reconstructions(x_eval[:RECON_ITEMS]))
            # The decoder as it is now (a few hundred KB at most): pages decode any latent point at any step.
            arrays.update({f"{DECODER_PREFIX}{name}": value.detach().cpu().numpy()
                           for name, value in self.model.decoder.state_dict().items()})  # fmt: skip
            if eval_emb.shape[1] == 2 and len(ds.input_shape) == 3:  # images from a 2-D latent: its map
                arrays.update(self._latent_grid(eval_emb))
            if self.is_aae:
                arrays.update(self._prior_samples(y_eval))
        train_emb = distances.as_measured(models.embed(self.model, ds.x[self.probe_index]), distance).cpu().numpy()
        # One BLAS / OpenMP thread for these small arrays: scikit-learn's threads keep spinning
        # after a call and took the cores from the next training steps (1.5x slower steps on 2 cores).
        with thread_pools().limit(limits=1):
            if measured.shape[1] > 2:
                self._pca = arrays["pca"] = project(measured, "pca", self._pca)
            if self.delta is not None:
                found = metrics.evaluate_continuous(
                    train_emb, ds.target[self.probe_index].cpu().numpy(), measured, arrays["targets"],
                    distance=distance, margin=self.config.margin_distance, delta=self.delta, seed=self.config.seed,
                )  # fmt: skip
            else:
                found = metrics.evaluate(
                    train_emb, ds.y[self.probe_index].cpu().numpy(), measured, arrays["labels"],
                    n_clusters=ds.num_classes, distance=distance, margin=self.config.margin_distance,
                    seed=self.config.seed, full=final, whole_set=self.measures_whole_set(),
                )  # fmt: skip
        if self.is_vae:
            found.update(self._vae_metrics(x_eval))
        arrays.update(self.forces())
        return arrays, found

    def measures_whole_set(self) -> bool:
        """Whether this step's snapshot measures the whole-set metrics (the final one always does)."""
        return (self.step // self.config.resolved_snapshot_every()) % WHOLE_SET_EVERY == 0

    def forces(self) -> dict[str, np.ndarray]:
        """The loss's force on each evaluation item (see forces.py), for one batch of evaluation items
        drawn by the run's own sampler with a generator seeded by the run's seed: "forces" (E, D) and
        "force_drawn" (E,), whether the item was in that batch."""
        c, ds = self.config, self.data
        sampler = samplers.build(
            c.sampler, ds.eval_index, ds.y, c.batch_size, c.m_per_class,
            distance=self.loss.distance, margin=c.margin_distance or 0.0, targets=ds.target, delta=self.delta,
        )  # fmt: skip
        g = torch.Generator(self.device).manual_seed(c.seed)
        batch = sampler.draw(g)
        x = ds.x.index_select(0, batch.index)
        if batch.views or c.augment > 0:
            x = augment(x, max(c.augment, 0.0), g)
        force = forces.row_forces(self.loss, sampler, batch, models.embed(self.model, x))
        if self.is_vae:
            force = force * c.contrastive_weight  # the contrastive term's share of the VAE's loss
        total, drawn = forces.item_forces(force, batch.index, ds.eval_index)
        return {"forces": total, "force_drawn": drawn}

    def _reconstructions(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        self.model.eval()
        with torch.no_grad():
            recon = self.model.decoder(self.model.embed(x))
        self.model.train()
        return {"originals": x.cpu().numpy(), "reconstructions": recon.cpu().numpy()}

    def _latent_grid(self, mu: torch.Tensor) -> dict[str, np.ndarray]:
        """A 2-D latent space decoded on a LATENT_GRID x LATENT_GRID grid spanning the held-out means
        (2nd to 98th percentile on each axis): "latent_grid" (G * G, C, H, W), row by row from the top
        (highest z2) and left to right (lowest z1), and "latent_axes" (2, G), the z1 and z2 values."""
        lo, hi = torch.quantile(mu.float(), torch.tensor([0.02, 0.98], device=mu.device), dim=0)  # (2,) each
        z1 = torch.linspace(float(lo[0]), float(hi[0]), LATENT_GRID, device=mu.device)
        z2 = torch.linspace(float(lo[1]), float(hi[1]), LATENT_GRID, device=mu.device)
        points = torch.stack(torch.meshgrid(z2.flip(0), z1, indexing="ij")[::-1], dim=-1).reshape(-1, 2)  # (G*G, 2)
        self.model.eval()
        with torch.no_grad():
            images = self.model.decoder(points)
        self.model.train()
        return {"latent_grid": images.cpu().numpy(), "latent_axes": torch.stack([z1, z2]).cpu().numpy()}

    def _prior_samples(self, labels: torch.Tensor) -> dict[str, np.ndarray]:
        """ "prior_samples" (E, D): one sample of the AAE's prior per evaluation item (with the mixture, from
        the mode of the item's class, `labels` (E,)); the same samples at every snapshot (drawn with the run's
        seed), for the pages to draw beside the embedding."""
        g = torch.Generator(self.device).manual_seed(self.config.seed)
        return {"prior_samples": self.prior.sample(labels, g).cpu().numpy()}

    def _vae_metrics(self, x: torch.Tensor) -> dict[str, float]:
        self.model.eval()
        with torch.no_grad():
            out = self.model(x) if self.is_aae else self.model(x, self.generator)
        self.model.train()
        if self.is_aae:  # no posterior, so no KL: the prior is the discriminator's to judge
            return {"recon_mse": float((out[1].double() - x.double()).pow(2).mean())}
        return metrics.vae_metrics(x.cpu(), out.recon.cpu(), out.mu.cpu(), out.logvar.cpu())

    def state(self) -> dict:
        """Everything needed to resume: weights, optimiser, step, config, RNG states.

        A copy, not views of the live tensors: training goes on after the event is handed out.
        """
        state = {
            "model": copy.deepcopy(self.model.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "step": self.step,
            "config": self.config.model_dump(mode="json"),
            "rng": {"generator": self.generator.get_state(), "torch": torch.get_rng_state()},
        }
        if self.is_aae:  # the discriminator and the regularisation phase's optimisers
            state["adversary"] = copy.deepcopy({
                "discriminator": self.discriminator.state_dict(),
                "discriminator_optimizer": self.discriminator_optimizer.state_dict(),
                "generator_optimizer": self.generator_optimizer.state_dict(),
            })  # fmt: skip
        return state

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        _load_optimizer(self.optimizer, state["optimizer"])
        if self.is_aae:
            adversary = state["adversary"]
            self.discriminator.load_state_dict(adversary["discriminator"])
            _load_optimizer(self.discriminator_optimizer, adversary["discriminator_optimizer"])
            _load_optimizer(self.generator_optimizer, adversary["generator_optimizer"])
        self.step = int(state["step"])
        generator_state = state["rng"]["generator"].cpu()
        if len(generator_state) == len(self.generator.get_state()):
            self.generator.set_state(generator_state)
        else:  # saved on another kind of device (CPU and CUDA generators differ): a fresh stream
            self.generator.manual_seed(self.config.seed + self.step)
        torch.set_rng_state(state["rng"]["torch"].cpu())


def _load_optimizer(optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """Loads an optimiser's saved state. A checkpoint from another device carries that device's fused /
    capturable flags: the optimiser keeps its own."""
    flags = ("fused", "capturable", "foreach")
    groups = [
        g | {k: mine[k] for k in flags if k in mine}
        for g, mine in zip(saved["param_groups"], optimizer.param_groups, strict=True)
    ]
    optimizer.load_state_dict(saved | {"param_groups": groups})


def mining_counts(mined, distance: distances.Distance, margin: float | None) -> dict[str, torch.Tensor]:
    """Counts (0-d tensors, not synced) of what a step's miner handed the loss.

    Pairs: how many, and how many cost loss (a positive apart, a negative inside the margin).
    Triplets: how many, and how many are hard (d(a, n) <= d(a, p)), semi-hard (d(a, p) < d(a, n) <
    d(a, p) + margin: both cost loss) or easy (the rest, which cost nothing). Views and labelled
    batches: how many items; every term of NT-Xent and SupCon costs loss.
    """
    if isinstance(mined, samplers.Pairs):
        d = distance.paired(mined.x1.detach(), mined.x2.detach())  # (P,)
        same = mined.same.bool()
        active = torch.where(same, d > 0, d < (margin if margin is not None else 0.0))
        return {"mined": torch.tensor(float(len(d)), device=d.device), "active": active.float().sum()}
    if isinstance(mined, samplers.Triplets):
        a, p, n = (t.detach() for t in mined)
        d_ap, d_an = distance.paired(a, p), distance.paired(a, n)  # (T,) each
        hard = d_an <= d_ap
        semi_hard = ~hard & (d_an < d_ap + (margin or 0.0))
        return {"mined": torch.tensor(float(len(a)), device=a.device), "hard": hard.float().sum(),
                "semi_hard": semi_hard.float().sum()}  # fmt: skip
    items = mined.z_a if isinstance(mined, samplers.Views) else mined.z
    return {"mined": torch.tensor(float(len(items)), device=items.device)}


def mining_shares(counts: dict[str, float]) -> dict[str, float]:
    """The metric row's mining columns from `mining_counts`: "mined" (pairs, triplets or items the loss
    saw), "active_share" (share of those terms with a non-zero loss) and, for triplets, the shares of
    hard, semi-hard and easy negatives."""
    n, nan = counts["mined"], float("nan")
    row = {"mined": n}
    if "active" in counts:
        row["active_share"] = counts["active"] / n if n else nan
    if "hard" in counts:
        hard, semi = (counts["hard"] / n, counts["semi_hard"] / n) if n else (nan, nan)
        row |= {"active_share": hard + semi, "hard_share": hard, "semi_hard_share": semi, "easy_share": 1 - hard - semi}
    if "active" not in counts and "hard" not in counts:
        row["active_share"] = 1.0 if n else nan
    return row


class Pace:
    """Slow motion: at most `steps_per_second` steps a second (0: no limit), counted from the last restart."""

    def __init__(self, steps_per_second: float):
        self.period = 1 / steps_per_second if steps_per_second else 0.0
        self.restart()

    def restart(self) -> None:
        self.start, self.steps = time.perf_counter(), 0

    def wait(self) -> bool:
        """After a step: sleeps until that step's time comes; whether it slept."""
        if not self.period:
            return False
        self.steps += 1
        ahead = self.start + self.steps * self.period - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
        return ahead > 0


class Laps:
    """Wall time by phase, as a stopwatch's laps: `lap(phase)` adds the time since the last lap to it."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self._last
        self._last = now


def train(
    config: RunConfig,
    on_event: Callable[[Event], None] = lambda event: None,
    should_stop: Callable[[], bool] = lambda: False,
    resume: dict | None = None,
    log_every: int = 1,
    holds: Callable[[int], bool] = lambda step: False,
) -> dict:
    """Train one run; returns {"status", "step", "metrics", "train_seconds", "pairs_per_second", "device",
    "seconds"}: "seconds" is the wall time by phase, "start" (data, model, the step-0 snapshot), "steps"
    (optimiser steps only), "logging" (step rows: batch statistics, `on_event`, `should_stop`),
    "snapshots", "checkpoints" and "final" (the last snapshot and checkpoint).

    Calls `on_event` with a "step" row every `log_every` steps, a "snapshot" every
    `config.resolved_snapshot_every()` steps, a "checkpoint" (with the resumable state) every
    `config.resolved_checkpoint_every()` steps and at the end, and "final" with the metrics. A step row
    holds the loss terms, the batch's distance statistics, "lr", "pairs_per_second" (of the optimiser
    steps alone) and "waited_seconds" (held and paced so far, for the pages' wall-clock rate).
    A non-finite loss, or one DIVERGENCE_FACTOR times the first logged loss (float32 can hold
    a blown-up loss of 1e31 without overflowing), stops the run with TrainingError("diverged at step N").
    `should_stop()` is checked once per step; when it says so the run ends with status "cancelled".

    `holds(step)`, asked after each `should_stop()`, pauses the training while it says so: the loop
    takes a snapshot of the step it holds at (unless it has one; at most HELD_SNAPSHOTS a run), reports
    "held", waits asking both every HOLD_POLL_SECONDS, and reports "released" when it goes on. The
    time held is left out of every figure ("held" in "seconds"). `config.steps_per_second`, when set,
    paces the steps (slow motion; the waits are "paced").
    """
    laps = Laps()
    refused = memory_refusal(config, resolve_device(config.device))
    if refused:
        raise TrainingError(refused)
    trainer = Trainer(config, resume)
    label = device_label(trainer.device)
    on_event(Event("start", trainer.step, {"device": label, "classes": trainer.data.classes}))
    snapshot_every, checkpoint_every = config.resolved_snapshot_every(), config.resolved_checkpoint_every()
    if trainer.step == 0:
        _emit_snapshot(trainer, on_event, items=True)  # the pages show these items from then on
    status, steps_done, started = "finished", 0, time.perf_counter()
    laps.seconds |= {"steps": 0.0, "logging": 0.0, "snapshots": 0.0, "checkpoints": 0.0}
    laps.lap("start")
    first_loss, snapped, held_snapshots = None, trainer.step, 0  # snapped: the step of the last snapshot
    pace = Pace(config.steps_per_second)
    while trainer.step < config.steps:
        if should_stop():
            status = "cancelled"
            break
        if holds(trainer.step):
            laps.lap("logging")
            if snapped != trainer.step and held_snapshots < HELD_SNAPSHOTS:
                _emit_snapshot(trainer, on_event)
                snapped, held_snapshots = trainer.step, held_snapshots + 1
            on_event(Event("held", trainer.step))
            while not should_stop() and holds(trainer.step):
                time.sleep(HOLD_POLL_SECONDS)
            on_event(Event("released", trainer.step))
            pace.restart()
            laps.lap("held")
            continue  # asks should_stop again: a run stopped while held ends here
        laps.lap("logging")
        terms = trainer.train_step()
        step = trainer.step
        steps_done += 1
        logged = step % log_every == 0 or step == config.steps
        if logged:
            row = {name: value.item() for name, value in terms.items()}  # syncs with the device
            laps.lap("steps")
            first_loss = row["loss"] if first_loss is None else first_loss
            if not abs(row["loss"]) <= DIVERGENCE_FACTOR * max(abs(first_loss), 1.0):  # NaN fails too
                on_event(Event("error", step, {"message": f"diverged at step {step}"}))
                raise TrainingError(f"diverged at step {step}")
            row |= trainer.batch_distance_stats()
            row |= {"lr": trainer.optimizer.param_groups[0]["lr"],
                    "pairs_per_second": config.batch_size * steps_done / max(laps.seconds["steps"], 1e-9),
                    "waited_seconds": laps.seconds.get("held", 0.0) + laps.seconds.get("paced", 0.0)}  # fmt: skip
            on_event(Event("step", step, row))
        laps.lap("logging" if logged else "steps")
        if step % snapshot_every == 0 and step < config.steps:
            _emit_snapshot(trainer, on_event)
            snapped = step
            laps.lap("snapshots")
        if step % checkpoint_every == 0 and step < config.steps:
            on_event(Event("checkpoint", step, {"state": trainer.state()}))
            laps.lap("checkpoints")
        if pace.wait():
            laps.lap("paced")
    train_seconds = time.perf_counter() - started - laps.seconds.get("held", 0.0) - laps.seconds.get("paced", 0.0)
    laps.lap("logging")
    final_metrics = _emit_snapshot(trainer, on_event, final=True)
    on_event(Event("checkpoint", trainer.step, {"state": trainer.state()}))
    laps.lap("final")
    result = {
        "status": status,
        "step": trainer.step,
        "device": label,
        "train_seconds": train_seconds,
        "pairs_per_second": config.batch_size * steps_done / max(laps.seconds["steps"], 1e-9),
        "metrics": final_metrics,
        "seconds": laps.seconds,
    }
    on_event(Event("final", trainer.step, result))
    return result


def _emit_snapshot(trainer: Trainer, on_event, final: bool = False, items: bool = False) -> dict[str, float]:
    arrays, found = trainer.snapshot(final=final, items=items)
    on_event(Event("snapshot", trainer.step, {"arrays": arrays, "metrics": found, "final": final}))
    return found
