"""Two processes (gloo, CPU) with gather_distributed=True train exactly like one process on the whole batch:
equal loss, and equal parameter gradients after DistributedDataParallel averages them."""
import os
import socket
import warnings

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from simvae_fast import functional
from simvae_fast.nn import InfoNCELoss, NTXentLoss

WORLD, BATCH, DIM = 2, 6, 5  # BATCH data per process


def data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(WORLD * BATCH, 3, DIM, generator=g, dtype=torch.float64)


def model():
    torch.manual_seed(1)
    return torch.nn.Linear(DIM, 4).double()


LOSSES = {
    "nt_xent": lambda net, x, distributed: NTXentLoss(0.3, gather_distributed=distributed)(net(x[:, 0]), net(x[:, 1])),
    "info_nce": lambda net, x, distributed: InfoNCELoss(0.3, positives="logsumexp", gather_distributed=distributed)(
        net(x)),
    "simclr": lambda net, x, distributed: functional.simclr_loss_func(
        net(x).reshape(-1, 4), torch.arange(x.shape[0]).repeat_interleave(3) + 100 * (
            dist.get_rank() if distributed else 0), 0.2),
}


def run_rank(rank, port, results):
    warnings.simplefilter("error", FutureWarning)  # a deprecated collective fails the run (it did before #16)
    warnings.simplefilter("error", DeprecationWarning)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        for name, loss_fn in LOSSES.items():
            net = DistributedDataParallel(model())
            x = data()[rank * BATCH:(rank + 1) * BATCH]
            loss = loss_fn(net, x, True)
            loss.backward()
            mean_loss = loss.detach().clone()
            dist.all_reduce(mean_loss)
            results[(name, rank)] = (float(mean_loss) / WORLD, net.module.weight.grad.clone())
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_process():
    with mp.Manager() as manager:
        results = manager.dict()
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        mp.spawn(run_rank, args=(free_port(), results), nprocs=WORLD, join=True)
        results = dict(results)
    for name, loss_fn in LOSSES.items():
        net = model()
        loss = loss_fn(net, data(), False)
        loss.backward()
        for rank in range(WORLD):
            got_loss, got_grad = results[(name, rank)]
            torch.testing.assert_close(got_loss, float(loss.detach()), msg=f"{name}: loss")
            torch.testing.assert_close(got_grad, net.weight.grad, msg=f"{name}: weight gradient")
