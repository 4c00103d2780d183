"""Gathering embeddings from every process with their gradient, for losses whose anchors are this process's
rows and whose columns are all processes' rows (lightly's and solo-learn's distributed contrastive losses).

Gradient bookkeeping: all_gather's backward sums the gradients that every process sends back to this
process's rows. With each process's loss the mean over its own anchor rows, the sum over processes of the
losses is world_size times the single-process loss on the concatenated batch, so this process's rows receive
world_size times the single-process gradient; DistributedDataParallel averages parameter gradients over the
processes, which divides it back out: parameters get exactly the single-process gradient.
"""
import torch
import torch.distributed as dist
from torch.distributed.nn.functional import all_gather


def world_size():
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_rows(x):
    """(all processes' x concatenated along dim 0 with gradient, index of this process's first row).

    Every process must pass a tensor of the same shape.
    """
    if world_size() == 1:
        return x, 0
    return torch.cat(all_gather(x.contiguous()), dim=0), dist.get_rank() * x.shape[0]
