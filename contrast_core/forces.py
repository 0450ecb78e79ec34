"""The forces: what the loss does to each item's embedding, drawn where it acts.

At a snapshot the worker draws one batch of *evaluation* items with the run's own sampler (a
generator seeded with the run's seed, so the same items every snapshot), embeds it, mines it as
training does, and takes the gradient of the loss with respect to each row's embedding. The force
on a row is the negative gradient: where one gradient-descent step on the embedding would move it.
Rows of one item (the two views, or both sides of pairs) add up.

Forces are stated in the space the pages draw: the raw embedding for Euclidean distances, and the
unit sphere for the cosine (`projection.in_plane` puts them in a 2-D layout), where a move `de` of the raw embedding `e` moves the drawn point
`u = e / |e|` by `(I - u u^T) de / |e|` (the loss ignores the length, so only that part acts).
"""

from __future__ import annotations

import numpy as np
import torch

from contrast_core.samplers import Batch, Sampler


def row_forces(loss: torch.nn.Module, sampler: Sampler, batch: Batch, embeddings: torch.Tensor) -> torch.Tensor:
    """(B, D) raw embeddings of a batch -> (B, D) forces on the rows, in the drawn space."""
    e = embeddings.detach().float().requires_grad_(True)
    value = loss(*sampler.mine(e, batch, loss.kind))
    (grad,) = torch.autograd.grad(value, e, allow_unused=True)
    force = -grad if grad is not None else torch.zeros_like(e)
    if loss.distance.name == "cosine":
        norm = e.detach().norm(dim=1, keepdim=True).clamp_min(1e-12)
        u = e.detach() / norm
        force = (force - (force * u).sum(1, keepdim=True) * u) / norm  # the tangential part, per unit length
    return force.detach()


def item_forces(force: torch.Tensor, rows: torch.Tensor, items: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Forces on the rows of a batch summed per item: ((E, D) forces, (E,) drawn).

    Args:
        force: (B, D) forces on the batch's rows.
        rows: (B,) the dataset row each batch row embeds.
        items: (E,) the evaluation items' dataset rows, in snapshot order.
    `drawn[i]` says whether item i was in the batch at all: an item in it with a zero force is one
    that no term of the loss touches (an easy pair, a triplet already satisfied).
    """
    order = torch.argsort(items)
    place = torch.searchsorted(items[order], rows)  # (B,) where each row sits among the sorted items
    found = (place < len(items)) & (items[order][place.clamp_max(len(items) - 1)] == rows)
    position = order[place.clamp_max(len(items) - 1)][found]  # (B',) snapshot positions
    total = torch.zeros(len(items), force.shape[1], dtype=force.dtype, device=force.device)
    total.index_add_(0, position, force[found])
    drawn = torch.zeros(len(items), dtype=torch.bool, device=force.device)
    drawn[position] = True
    return total.cpu().numpy().astype(np.float32), drawn.cpu().numpy()
