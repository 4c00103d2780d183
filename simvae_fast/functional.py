"""Functional losses over the fused ops, with the signatures of the libraries users already train with.

Each is the functional twin of a module in simvae_fast.nn.
"""
import torch

from simvae_fast.contrastive import info_nce
from simvae_fast.distributed import gather_rows, world_size


def _local_row_mean(z, temperature, normalize, positives, gather_distributed, backend):
    """Mean InfoNCE over this process's rows; with gather_distributed, against every process's rows."""
    if not gather_distributed or world_size() == 1:
        return info_nce(z, temperature=temperature, normalize=normalize, positives=positives, backend=backend)
    z_all, first_group = gather_rows(z)
    rows = info_nce(z_all, temperature=temperature, normalize=normalize, positives=positives,
                    reduction="none", backend=backend)
    views = z.shape[1]
    return rows[first_group * views:(first_group + z.shape[0]) * views].mean()


def info_nce_loss(views, temperature=0.5, *, normalize=True, positives="mean", gather_distributed=False,
                  backend="auto"):
    """InfoNCE over groups of views, mean over rows. `views`: [G, J, D], or a list of J tensors [G, D].

    With gather_distributed=True (torch.distributed initialised), this process's rows are the anchors and
    every process's rows the columns; parameters then get the single-process gradient under DDP.
    """
    if isinstance(views, (list, tuple)):
        shapes = [tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__ for v in views]
        if len(set(shapes)) != 1 or not isinstance(views[0], torch.Tensor) or views[0].dim() != 2:
            raise ValueError(f"views: expected a list of J tensors of one shape [G, D], got {shapes}")
        views = torch.stack(list(views), dim=1)
    z = views
    return _local_row_mean(z, temperature, normalize, positives, gather_distributed, backend)


def nt_xent_loss(out0, out1, temperature=0.5, gather_distributed=False, backend="auto"):
    """SimCLR's NT-Xent with lightly's NTXentLoss semantics: rows of out0 and out1 [B, D] are normalised,
    each row's positive is its partner in the other tensor, its negatives every other row; mean over 2B rows."""
    for name, t in (("out0", out0), ("out1", out1)):
        if not isinstance(t, torch.Tensor) or t.dim() != 2:
            raise ValueError(f"{name}: expected a tensor [batch, dim], got {getattr(t, 'shape', type(t).__name__)}")
    if out0.shape != out1.shape:
        raise ValueError(f"out1: expected the shape of out0 {tuple(out0.shape)}, got {tuple(out1.shape)}")
    z = torch.stack([out0, out1], dim=1)
    return _local_row_mean(z, temperature, True, "mean", gather_distributed, backend)


def simclr_loss_func(z, indexes, temperature=0.1, backend="auto"):
    """solo-learn's simclr_loss_func: rows of z [N, D] with equal `indexes` [N] are positives of each other
    (the log-sum-exp form), every other row a negative; mean over rows. Rows may come in any order, but every
    index must occur equally often. Gathers from every process when torch.distributed is initialised, as
    solo-learn does."""
    if not isinstance(z, torch.Tensor) or z.dim() != 2:
        raise ValueError(f"z: expected a tensor [N, dim], got {getattr(z, 'shape', type(z).__name__)}")
    if not isinstance(indexes, torch.Tensor) or indexes.shape != z.shape[:1]:
        raise ValueError(f"indexes: expected a tensor of shape [{z.shape[0]}], got "
                         f"{getattr(indexes, 'shape', type(indexes).__name__)}")
    z_all, first_row = gather_rows(z)
    indexes_all, _ = gather_rows(indexes)
    order = torch.argsort(indexes_all, stable=True)
    _, counts = torch.unique_consecutive(indexes_all[order], return_counts=True)
    views = int(counts[0])
    if bool((counts != views).any()) or views < 2:
        raise ValueError("indexes: expected every index to occur equally often, at least twice (J views per "
                         f"datum), got occurrence counts {sorted(set(counts.tolist()))}")
    grouped = z_all[order].reshape(-1, views, z.shape[1])
    rows_sorted = info_nce(grouped, temperature=temperature, positives="logsumexp", reduction="none",
                           backend=backend)
    rows = torch.empty_like(rows_sorted).scatter(0, order, rows_sorted)
    return rows[first_row:first_row + z.shape[0]].mean()
