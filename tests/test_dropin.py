"""The drop-in losses against lightly's and solo-learn's formulas, re-implemented here independently."""
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from simvae_fast import functional
from simvae_fast.nn import InfoNCELoss, NTXentLoss


def lightly_nt_xent(out0, out1, temperature):
    """lightly's NTXentLoss.forward (no memory bank, one process): four logit blocks, cross-entropy."""
    out0, out1 = F.normalize(out0, dim=1), F.normalize(out1, dim=1)
    B = out0.shape[0]
    diag = torch.eye(B, dtype=torch.bool)
    l00 = (out0 @ out0.T / temperature)[~diag].view(B, -1)
    l11 = (out1 @ out1.T / temperature)[~diag].view(B, -1)
    l01, l10 = out0 @ out1.T / temperature, out1 @ out0.T / temperature
    logits = torch.cat([torch.cat([l01, l00], dim=1), torch.cat([l10, l11], dim=1)], dim=0)
    return F.cross_entropy(logits, torch.arange(B).repeat(2))


def solo_simclr(z, indexes, temperature):
    """solo-learn's simclr_loss_func (one process): sums of exponentials over positive and negative masks."""
    z = F.normalize(z, dim=-1)
    sim = torch.exp(z @ z.T / temperature)
    pos_mask = indexes[:, None] == indexes[None, :]
    pos_mask.fill_diagonal_(False)
    neg_mask = indexes[:, None] != indexes[None, :]
    pos, neg = (sim * pos_mask).sum(1), (sim * neg_mask).sum(1)
    return -torch.log(pos / (pos + neg)).mean()


def leaves(*shape, n=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_() for _ in range(n)]


def assert_same_value_and_grads(ours, theirs, inputs):
    torch.testing.assert_close(ours, theirs)
    for g_ours, g_theirs in zip(torch.autograd.grad(ours, inputs), torch.autograd.grad(theirs, inputs)):
        torch.testing.assert_close(g_ours, g_theirs)


@pytest.mark.parametrize("B, D, temperature", [(1, 3, 0.5), (7, 16, 0.1), (33, 5, 2.0)])
def test_nt_xent_equals_lightly(B, D, temperature):
    out0, out1 = leaves(B, D, n=2, seed=B)
    assert_same_value_and_grads(NTXentLoss(temperature)(out0, out1), lightly_nt_xent(out0, out1, temperature),
                                [out0, out1])


@pytest.mark.parametrize("groups, views", [(5, 2), (4, 3), (2, 5)])
def test_simclr_loss_func_equals_solo_learn_in_any_row_order(groups, views):
    (z,) = leaves(groups * views, 6, seed=views)
    indexes = torch.arange(groups).repeat(views)[torch.randperm(groups * views)]
    assert_same_value_and_grads(functional.simclr_loss_func(z, indexes, 0.1), solo_simclr(z, indexes, 0.1), [z])


def test_info_nce_loss_takes_a_tensor_or_a_list_of_views():
    views = leaves(6, 8, n=3, seed=3)
    from_list = InfoNCELoss(positives="logsumexp")(views)
    from_tensor = InfoNCELoss(positives="logsumexp")(torch.stack(views, dim=1))
    torch.testing.assert_close(from_list, from_tensor)


def test_learnable_temperature_gets_a_gradient():
    loss_fn = InfoNCELoss(temperature=0.2, learnable_temperature=True).double()
    (z,) = leaves(4, 2, 8)
    loss_fn(z).backward()
    assert loss_fn.log_temperature.grad is not None and loss_fn.log_temperature.grad != 0
    torch.testing.assert_close(loss_fn.log_temperature.exp().detach(), torch.tensor(0.2, dtype=torch.float64))


@pytest.mark.parametrize("call, match", [
    (lambda: NTXentLoss()(torch.randn(4, 8), torch.randn(5, 8)), "out1: expected the shape of out0"),
    (lambda: NTXentLoss()(torch.randn(4, 8, 2), torch.randn(4, 8, 2)), r"out0: expected a tensor \[batch, dim\]"),
    (lambda: NTXentLoss(temperature=0.0), "temperature: expected a positive"),
    (lambda: NTXentLoss(memory_bank_size=4096), "memory_bank_size: .* no memory bank"),
    (lambda: InfoNCELoss(temperature=-1.0), "temperature: expected a positive"),
    (lambda: InfoNCELoss(positives="max"), "positives: expected one of"),
    (lambda: functional.simclr_loss_func(torch.randn(5, 4), torch.tensor([0, 0, 1, 1, 1])),
     "indexes: expected every index to occur equally often"),
    (lambda: functional.simclr_loss_func(torch.randn(4, 4), torch.tensor([0, 1, 2, 3])),
     "indexes: expected every index to occur equally often, at least twice"),
    (lambda: functional.simclr_loss_func(torch.randn(4, 4), torch.tensor([0, 1])), r"indexes: expected .*\[4\]"),
    (lambda: functional.simclr_loss_func(torch.randn(4, 4), torch.tensor([0, 0, 1, 1]), temperature=0.0),
     "temperature: expected a positive"),
])
def test_bad_input_is_a_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_readme_examples_run_as_written():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## Use it in your code", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 3
    for block in blocks:
        namespace = {}
        exec(compile(block, "README.md", "exec"), namespace)
        assert math.isfinite(float(namespace["loss"].detach()))
