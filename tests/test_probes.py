"""The probes: every probe of the bank trains exactly as the nn.Module it stands for would, alone, with autograd
and torch.optim.Adam on the same mini-batches (float64, odd sizes); the protocol's epoch choice; bad input."""
import pytest
import torch
import torch.nn.functional as F

from simvae_fast.app import probes


def _split(n, d, generator, classes=3, outputs=3, spread=1.0):
    x = torch.randn(n, d, generator=generator, dtype=torch.float64) * spread
    labels = (x[:, 0] > 0).long() + (x[:, 1] > 0.5 * spread).long()  # learnable, 3 classes
    values = torch.stack([x[:, 2] * 2 - x[:, 3], x[:, 1], -x[:, 0]], 1) + 0.1 * spread * torch.randn(
        n, outputs, generator=generator, dtype=torch.float64)
    return x, {"kind": labels % classes, "where": values}


@pytest.mark.parametrize("n, d", [(1, 4), (67, 5), (257, 17)])
def test_bank_matches_separate_autograd_probes(n, d):
    """Each of the four probes (two tasks x linear/MLP) against a copy trained alone: same weights after every
    step. Fails when a head's gradient is wrong or leaks into another head: e.g. dropping the block mask of
    W_out, or `* (h > 0)`, or the 2/O_t scale of the squared error, breaks it."""
    g = torch.Generator().manual_seed(n)
    features, targets = _split(n, d, g)
    tasks = {"kind": probes.classification(3), "where": probes.regression(3)}
    bank = probes.ProbeBank(tasks, d, torch.Generator().manual_seed(1), torch.float64)
    alone = {(name, kind): bank.module(name, kind) for name in tasks for kind in probes.PROBES}
    optimizers = {key: torch.optim.Adam(m.parameters(), lr=probes.PROBE_LR) for key, m in alone.items()}
    x1 = torch.cat([features, torch.ones(n, 1, dtype=torch.float64)], 1)
    y = torch.cat([tasks[name].target_matrix(targets[name], torch.float64) for name in tasks], 1)
    order = torch.Generator().manual_seed(2)
    for _ in range(3):
        for idx in torch.randperm(n, generator=order).split(probes.PROBE_BATCH):
            bank.step(x1[idx], torch.cat([y, y], 1)[idx])
            for (name, kind), module in alone.items():
                out = module(features[idx])
                if name == "kind":
                    loss = F.cross_entropy(out, targets[name][idx])
                else:
                    loss = F.mse_loss(out, targets[name][idx])
                optimizers[name, kind].zero_grad()
                loss.backward()
                optimizers[name, kind].step()
    for (name, kind), module in alone.items():
        trained = bank.module(name, kind)
        for a, b in zip(trained.parameters(), module.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=f"{name} {kind}")
    assert (bank.w_out * (1 - bank.mask)).abs().max() == 0  # off-block weights stay exactly zero


def test_probes_learn_and_report_the_validation_chosen_epoch():
    g = torch.Generator().manual_seed(0)
    train, val, test = (_split(n, 8, g) for n in (1600, 300, 300))
    tasks = {"kind": probes.classification(3), "where": probes.regression(3)}
    results = probes.train_probes(tasks, train, val, test, epochs=40, seed=3)
    for name, metric in (("kind", "acc"), ("where", "r2")):
        for kind in probes.PROBES:
            r = results[name][kind]
            assert len(r["history"]) == 40 and r["epochs"] == 40
            chosen = r["history"][r["epoch"] - 1]
            assert chosen[f"val_{metric}"] == max(h[f"val_{metric}"] for h in r["history"])
            assert chosen[f"test_{metric}"] == r[f"test_{metric}"]  # the test score at the chosen epoch
            assert r[f"test_{metric}"] > (0.6 if metric == "acc" else 0.25)  # majority class 0.49, mean R² 0
    assert probes.train_probes(tasks, train, val, test, epochs=40, seed=3) == results  # seeded


def test_empty_training_split_is_refused():
    x, t = _split(4, 4, torch.Generator().manual_seed(0))
    empty = (x[:0], {k: v[:0] for k, v in t.items()})
    with pytest.raises(ValueError, match="train: the probes need at least one training image"):
        probes.train_probes({"kind": probes.classification(3)}, empty, (x, t), (x, t), epochs=1)
