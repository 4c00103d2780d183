"""The CLI end to end on a tiny synthetic IDX dataset: each method trains, saves, evaluates; bad input is refused."""
import csv
import json
import math

import pytest
import torch

from simvae_fast.cli import main

TINY = ["--limit-train", "192", "--val-size", "64", "--limit-test", "64", "--epochs", "1", "--probe-epochs", "2",
        "--log-every", "1", "--no-verify"]


@pytest.mark.parametrize("method, extra", [
    ("simvae", []),
    ("vae", ["--views", "4", "--batch-size", "128"]),
    ("simclr", ["--augment", "simclr"]),
])
def test_each_method_trains_and_evaluates(data_root, tmp_path, capsys, method, extra):
    out = tmp_path / "run"
    assert main(["train", "--method", method, "--data-root", str(data_root), "--out", str(out), *TINY, *extra]) == 0
    printed = capsys.readouterr().out
    assert "class acc, linear" in printed and "knn k=20" in printed and "position r2, mlp" in printed

    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    groups = 128 // (4 if method == "vae" else 2)
    assert [int(r["step"]) for r in rows] == list(range(1, math.ceil(192 / groups) + 1))  # 192 images an epoch
    assert all(math.isfinite(float(r["loss"])) for r in rows)
    parts = {"simvae": {"reconstruction", "entropy", "log_prior"}, "vae": {"reconstruction", "entropy", "log_prior"},
             "simclr": set()}[method]
    assert set(rows[0]) == {"step", "epoch", "loss"} | parts

    results = json.loads((out / "results.json").read_text())
    assert results["method"] == method and results["epochs"] == 1
    content = results["content"]["class"]
    for kind in ("linear", "mlp"):
        assert 0.0 <= content[kind]["test_acc"] <= 1.0 and len(content[kind]["history"]) == 2
        chosen = content[kind]["history"][content[kind]["epoch"] - 1]
        assert chosen["val_acc"] == max(h["val_acc"] for h in content[kind]["history"])
        assert chosen["test_acc"] == content[kind]["test_acc"]  # reported at the validation-chosen epoch
    assert 0.0 <= content["knn"]["test_acc"] <= 1.0 and content["knn"]["k"] == 20
    assert set(results["style"]) == {"flip", "scale", "position"}
    assert all(set(probes) == {"linear", "mlp"} for probes in results["style"].values())
    assert (out / "loss.png").stat().st_size > 0
    assert (out / "reconstructions.png").exists() == (method != "simclr")

    # `eval` on the saved run gives the same results (same checkpoint, same probe seed)
    assert main(["eval", str(out)]) == 0
    assert json.loads((out / "results.json").read_text()) == results


def test_existing_run_is_refused_unless_overwrite(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data-root", str(data_root), "--out", str(out), *TINY, "--no-eval"]
    assert main(args) == 0
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "exists and is not empty" in err and "--resume" in err and "--overwrite" in err
    (out / "notes.txt").write_text("mine")
    assert main([*args, "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "mine"  # only the run's own files are replaced


@pytest.mark.parametrize("args, valid", [
    (["train", "--method", "byol"], ["simvae", "vae", "simclr"]),
    (["train", "--dataset", "svhn"], ["fashion-mnist", "mnist", "cifar10", "celeba"]),
    (["train", "--prior", "laplace"], ["gaussian", "flat", "official"]),
    (["train", "--augment", "autoaugment"], ["official", "official-rgb", "simclr"]),
    (["train", "--device", "tpu"], ["auto", "cpu", "cuda"]),
    (["data", "fetch", "svhn"], ["fashion-mnist", "mnist", "cifar10", "celeba"]),
    (["frobnicate"], ["train", "eval", "data"]),
])
def test_unknown_values_list_the_valid_ones(capsys, args, valid):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert f"invalid choice: '{args[-1]}'" in error
    assert all(value in error for value in valid), error


def test_a_malformed_number_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--epochs", "two"])
    assert "invalid int value: 'two'" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--views", "1"], "views: simvae compares the views of an image and needs at least 2"),
    (["--views", "3"], "batch_size: expected a multiple of views (3), got 128"),
    (["--epochs", "0"], "epochs: expected a positive value"),
    (["--bf16", "--device", "cpu"], "bf16"),
    (["--resume"], "--resume: no checkpoint.pt"),
    (["--resume", "--overwrite"], "exclude each other"),
])
def test_bad_train_options(data_root, tmp_path, capsys, args, message):
    assert main(["train", "--data-root", str(data_root), "--out", str(tmp_path / "run"), *TINY, *args]) == 2
    assert message in capsys.readouterr().err


def test_resume_refuses_a_changed_configuration(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data-root", str(data_root), "--out", str(out), *TINY, "--no-eval"]) == 0
    assert main(["train", "--resume", "--out", str(out), "--sigma2", "0.5"]) == 2
    assert "only --epochs" in capsys.readouterr().err


def test_missing_dataset_names_the_fetch_command(isolated, capsys):
    assert main(["train", "--dataset", "mnist", "--out", str(isolated / "run")]) == 2
    assert "simvae-fast data fetch mnist" in capsys.readouterr().err


def test_checksums_are_checked_by_default(data_root, isolated, capsys):
    args = [a for a in TINY if a != "--no-verify"]
    assert main(["train", "--data-root", str(data_root), "--out", str(isolated / "run"), *args]) == 2
    assert "-ubyte.gz: SHA-256" in capsys.readouterr().err


def test_eval_of_a_directory_that_is_not_a_run(tmp_path, capsys):
    assert main(["eval", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_loss_parts_are_the_elbo_terms(data_root, tmp_path):
    """metrics.csv's loss is -(reconstruction + entropy + log_prior) per view (beta = 1)."""
    out = tmp_path / "run"
    assert main(["train", "--data-root", str(data_root), "--out", str(out), *TINY, "--no-eval"]) == 0
    with open(out / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            parts = float(row["reconstruction"]) + float(row["entropy"]) + float(row["log_prior"])
            assert float(row["loss"]) == pytest.approx(-parts, rel=1e-5)
    torch.load(out / "checkpoint.pt", weights_only=False)  # a complete checkpoint


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["simvae", "simclr"])
def test_cuda_bf16_run(data_root, tmp_path, method):
    """On the GPU: data, augmentations, fused ops and probes on the device, bfloat16 autocast."""
    out = tmp_path / "run"
    assert main(["train", "--method", method, "--data-root", str(data_root), "--out", str(out), *TINY,
                 "--device", "cuda", "--bf16"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert 0.0 <= results["content"]["class"]["linear"]["test_acc"] <= 1.0
    with open(out / "metrics.csv", newline="") as f:
        assert all(math.isfinite(float(r["loss"])) for r in csv.DictReader(f))


# --- the loss the trainer uses (simvae_fast.nn.SimVAELoss) against the reference and torch.distributions ---

@pytest.mark.parametrize("prior", ["gaussian", "flat", "official", "standard"])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_simvae_loss_against_independent_terms(prior, likelihood):
    from torch.distributions import Normal

    from simvae_fast import reference
    from simvae_fast.nn import SimVAELoss

    g = torch.Generator().manual_seed(5)
    G, J, D = 3, 2, 4
    x = torch.rand(G, J, 1, 5, 5, generator=g, dtype=torch.float64)
    x_out = torch.randn(G, J, 1, 5, 5, generator=g, dtype=torch.float64)
    mu, logvar = (torch.randn(G, J, D, generator=g, dtype=torch.float64) for _ in range(2))
    seed, n_views = 11, G * J
    loss_fn = SimVAELoss(sigma2=0.3, prior=prior, beta=0.5, likelihood=likelihood, reduction="mean")
    out = loss_fn(x, x_out, mu, logvar, seed=seed)

    z = reference.reparameterize(mu, logvar, reference.philox_randn(seed, 0, mu.shape).double())
    latent = loss_fn.latent(mu, logvar, seed)
    torch.testing.assert_close(latent.z, z)  # the decoder's z is the one scored
    for a, b in zip(loss_fn(x, x_out, mu, logvar, latent=latent), out):  # one fused pass, same values
        torch.testing.assert_close(a, b)
    if likelihood == "bernoulli":  # the continuous Bernoulli-form log-likelihood, x in [0, 1]
        recon = (x * x_out.sigmoid().log() + (1 - x) * (-x_out).sigmoid().log()).sum()
    else:
        recon = Normal(x_out, math.exp(0.5 * -4.6)).log_prob(x).sum()
    entropy = Normal(mu, (0.5 * logvar).exp()).entropy().sum()
    log_prior = reference.grouped_prior_log_prob(z, sigma2=0.3, prior=prior).sum()
    torch.testing.assert_close(out.reconstruction, recon / n_views)
    torch.testing.assert_close(out.entropy, entropy / n_views)
    torch.testing.assert_close(out.log_prior, log_prior / n_views)
    torch.testing.assert_close(out.loss, -(recon + 0.5 * (entropy + log_prior)) / n_views)
    summed = SimVAELoss(sigma2=0.3, prior=prior, beta=0.5, likelihood=likelihood, reduction="sum")
    torch.testing.assert_close(summed(x, x_out, mu, logvar, seed=seed).loss, out.loss * n_views)


def test_simvae_loss_bad_arguments():
    from simvae_fast.nn import SimVAELoss

    with pytest.raises(ValueError, match="likelihood: expected one of 'bernoulli', 'gaussian'"):
        SimVAELoss(likelihood="poisson")
    with pytest.raises(ValueError, match="reduction: expected one of 'sum', 'mean'"):
        SimVAELoss(reduction="none")
    with pytest.raises(ValueError, match="x_out: expected the shape of x"):
        SimVAELoss()(torch.rand(2, 2, 4), torch.rand(2, 2, 5), torch.zeros(2, 2, 3), torch.zeros(2, 2, 3))


# --- the RGB datasets: the ResNet pair, the Gaussian likelihood, the official RGB recipe ---

RGB_TINY = ["--architecture", "resnet", "--epochs", "1", "--limit-train", "64", "--limit-test", "32", "--val-size",
            "16", "--probe-epochs", "1", "--no-verify"]


def write_rgb_datasets(root):
    """CIFAR-10- and CelebA-shaped files: 96 + 32 CIFAR images, 120 CelebA JPEGs (72 train, 16 val, 32 test)."""
    import numpy as np

    from simvae_fast.app import celeba, cifar10

    rng = np.random.default_rng(3)
    cifar10.write_dataset(root, rng.integers(0, 256, (96, 3, 32, 32)), rng.integers(0, 10, 96),
                          rng.integers(0, 256, (32, 3, 32, 32)), rng.integers(0, 10, 32))
    attributes = np.where(rng.random((120, 40)) < 0.3, 1, -1)
    celeba.write_dataset(root, rng.integers(0, 256, (120, 80, 64, 3)), attributes, [0] * 72 + [1] * 16 + [2] * 32)
    return root


@pytest.mark.parametrize("dataset, targets, style", [
    ("cifar10", {"class"}, {"flip", "scale", "position", "colour"}),
    ("celeba", {"hair", "gender"}, {"flip", "scale", "position", "colour"}),
])
def test_rgb_dataset_trains_and_evaluates(isolated, capsys, dataset, targets, style):
    """The issue's command, on each RGB dataset: results.json with the content probes of every target (CelebA:
    hair colour and gender) and the RGB style targets."""
    root, out = write_rgb_datasets(isolated / "data"), isolated / "run"
    assert main(["train", "--dataset", dataset, "--data-root", str(root), "--out", str(out), *RGB_TINY]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["content"]) == targets and set(results["style"]) == style
    for probes in results["content"].values():
        assert {"linear", "mlp", "knn"} <= set(probes) and 0 <= probes["linear"]["test_acc"] <= 1
    config = json.loads((out / "config.json").read_text())
    assert (config["architecture"], config["latent_dim"], config["likelihood"]) == ("resnet", 64, "gaussian")
    assert "hair acc, linear" in capsys.readouterr().out or dataset == "cifar10"
    assert (out / "reconstructions.png").stat().st_size > 0


def test_rgb_dataset_missing_says_where_to_put_it(isolated, capsys):
    assert main(["train", "--dataset", "cifar10", "--out", str(isolated / "run")]) == 2
    err = capsys.readouterr().err
    assert "cifar-10-batches-py" in err and "cannot be fetched here" in err
    assert main(["data", "fetch", "celeba"]) == 2
    assert "list_eval_partition.txt" in capsys.readouterr().err


def test_resnet_on_grey_28px_is_refused(data_root, tmp_path, capsys):
    assert main(["train", "--data-root", str(data_root), "--out", str(tmp_path / "run"), *TINY,
                 "--architecture", "resnet"]) == 2
    assert "expected square images of 32 or 64 pixels, got 28x28" in capsys.readouterr().err
