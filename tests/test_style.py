"""Style evaluation and the probe protocol: R² against its definition, and the style probes recover what the
augmentation changed from a representation that sees it (pixels) but not from one that does not."""
import numpy as np
import pytest
import torch
from torch import nn

from simvae_fast import data, probes
from simvae_fast.style import TARGETS, evaluate_style


def test_r_squared_against_its_definition():
    rng = np.random.default_rng(0)
    targets, predictions = rng.normal(size=(257, 3)), rng.normal(size=(257, 3))
    expected = 1 - ((predictions - targets) ** 2).sum() / ((targets - targets.mean(axis=0)) ** 2).sum()
    t, p = torch.from_numpy(targets), torch.from_numpy(predictions)
    assert probes.r_squared(p, t) == pytest.approx(expected, rel=1e-12)
    assert probes.r_squared(t, t) == 1.0
    assert probes.r_squared(t.mean(dim=0).expand_as(t), t) == pytest.approx(0.0, abs=1e-12)


class Pixels(nn.Module):
    """The representation is the image itself: every style factor is in it."""

    def represent(self, images):
        return images.flatten(1)


class Blind(nn.Module):
    """The representation ignores the image: no style factor is in it."""

    def represent(self, images):
        return torch.randn(len(images), 8, generator=torch.Generator().manual_seed(len(images)))


def _dataset(n_train, n_val, n_test):
    """One asymmetric pattern (a bright off-centre block on a vertical ramp) per image, with a little noise."""
    ramp = torch.linspace(0, 120, 28).view(28, 1).expand(28, 28)
    pattern = ramp.clone()
    pattern[4:12, 6:20] += 120

    def split(n, seed):
        noise = torch.randint(0, 10, (n, 1, 28, 28), generator=torch.Generator().manual_seed(seed))
        return data.Split((pattern + noise).to(torch.uint8), torch.zeros(n, 1, dtype=torch.int64))

    return data.Dataset("synthetic", None, (("class", ("one",)),), split(n_train, 0), split(n_val, 1), split(n_test, 2))


def test_style_probes_recover_the_augmentation_from_pixels_only():
    dataset = _dataset(2000, 400, 400)
    seen = evaluate_style(Pixels(), dataset, torch.device("cpu"), probe_epochs=10)
    blind = evaluate_style(Blind(), dataset, torch.device("cpu"), probe_epochs=4)
    assert set(seen) == set(TARGETS) == set(blind)
    for kind in probes.PROBES:
        assert seen["flip"][kind]["test_acc"] > 0.95
        assert seen["scale"][kind]["test_r2"] > 0.5 and seen["position"][kind]["test_r2"] > 0.5
        assert abs(blind["flip"][kind]["test_acc"] - 0.5) < 0.1
        assert blind["scale"][kind]["test_r2"] < 0.05 and blind["position"][kind]["test_r2"] < 0.05
    for kind in probes.PROBES:  # the protocol: the test score is the one at the validation-chosen epoch
        for target, metric in (("flip", "acc"), ("scale", "r2"), ("position", "r2")):
            result = seen[target][kind]
            chosen = result["history"][result["epoch"] - 1]
            assert chosen[f"val_{metric}"] == max(h[f"val_{metric}"] for h in result["history"])
            assert chosen[f"test_{metric}"] == result[f"test_{metric}"]


def test_style_training_split_is_capped():
    dataset = _dataset(300, 50, 50)
    results = evaluate_style(Pixels(), dataset, torch.device("cpu"), probe_epochs=1, train_images=128)
    assert all(len(r["history"]) == 1 for target in results.values() for r in target.values())
