"""Gathering embeddings from every process with their gradient, for losses whose anchors are this process's
rows and whose columns are all processes' rows (lightly's and solo-learn's distributed contrastive losses).

Gradient bookkeeping: all_gather's backward sums the gradients that every process sends back to this
process's rows. With each process's loss the mean over its own anchor rows, the sum over processes of the
losses is world_size times the single-process loss on the concatenated batch, so this process's rows receive
world_size times the single-process gradient; DistributedDataParallel averages parameter gradients over the
processes, which divides it back out: parameters get exactly the single-process gradient.

The gather is torch's functional collective with autograd (its backward is the reduce-scatter of the
gradients, summing): all_gather_single_autograd from torch 2.13 on, all_gather_tensor_autograd (the same op
under its older name, deprecated in 2.13) before.
"""
import torch.distributed as dist
import torch.distributed._functional_collectives as collectives

_all_gather = getattr(collectives, "all_gather_single_autograd", None) or collectives.all_gather_tensor_autograd


def world_size():
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_rows(x):
    """(all processes' x concatenated along dim 0 with gradient, index of this process's first row).

    Every process must pass a tensor of the same shape.
    """
    if world_size() == 1:
        return x, 0
    gathered = _all_gather(x.contiguous(), 0, dist.group.WORLD)
    return collectives.wait_tensor(gathered), dist.get_rank() * x.shape[0]
