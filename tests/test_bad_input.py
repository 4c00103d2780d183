"""One table of bad calls to every public function and module: each raises an error that names the argument,
what was expected and what was given, before any kernel runs."""
import pytest
import torch

import simvae_fast
from simvae_fast import functional, reference
from simvae_fast.nn import InfoNCELoss, NTXentLoss, SimVAELoss

GOOD = torch.randn(4, 2, 3)
F64 = torch.randn(4, 2, 3, dtype=torch.float64)
FLAT = torch.randn(4, 3)
INTS = torch.ones(4, 2, 3, dtype=torch.int64)
IMAGES = torch.rand(4, 2, 1, 5, 5)

# (what is called, the call, exception type, pattern naming argument / expected / given)
CASES = [
    ("simvae_latent", lambda: simvae_fast.simvae_latent(FLAT, FLAT, seed=1), ValueError,
     r"mu: expected a 3-D tensor .*got shape \(4, 3\)"),
    ("simvae_latent", lambda: simvae_fast.simvae_latent(INTS, INTS, seed=1), TypeError,
     r"mu: expected a floating-point tensor, got .*int64"),
    ("simvae_latent", lambda: simvae_fast.simvae_latent(GOOD, torch.randn(4, 2, 5), seed=1), ValueError,
     r"logvar: expected the same shape as mu .*got shape \(4, 2, 5\)"),
    ("simvae_latent", lambda: simvae_fast.simvae_latent(GOOD, F64, seed=1), ValueError,
     r"logvar: expected the same dtype as mu .*got .*float64"),
    ("simvae_latent", lambda: simvae_fast.simvae_latent(GOOD, GOOD, eps=F64), ValueError,
     r"eps: expected the same dtype as mu .*got .*float64"),
    ("simvae_latent", lambda: simvae_fast.simvae_latent(GOOD, GOOD, sigma2=0.0, seed=1), ValueError,
     r"sigma2: expected a positive finite value, got 0.0"),
    ("simvae_latent", lambda: simvae_fast.simvae_latent(GOOD, GOOD, prior="laplace", seed=1), ValueError,
     r"prior: expected one of 'gaussian', 'flat', 'official', 'standard', got 'laplace'"),
    ("simvae_latent", lambda: simvae_fast.simvae_latent(GOOD[:, :1], GOOD[:, :1], seed=1), ValueError,
     r"prior: 'gaussian' couples the views .*needs J >= 2 views, got J = 1"),
    ("simvae_latent", lambda: simvae_fast.simvae_latent(GOOD, GOOD, seed=-3), ValueError,
     r"seed: expected an int in \[0, 2\*\*63\), got -3"),
    ("simvae_latent", lambda: simvae_fast.simvae_latent(GOOD, GOOD, seed=1, offset=1.5), ValueError,
     r"offset: expected an int in \[0, 2\*\*62\), got 1.5"),
    ("simvae_latent", lambda: simvae_fast.simvae_latent(GOOD, GOOD, seed=1, backend="gpu"), ValueError,
     r"backend: expected 'auto' or one of 'reference', 'cpu', 'triton', 'cuda', got 'gpu'"),
    ("info_nce", lambda: simvae_fast.info_nce(FLAT), ValueError, r"z: expected a 3-D tensor .*got shape \(4, 3\)"),
    ("info_nce", lambda: simvae_fast.info_nce(GOOD[:, :1]), ValueError,
     r"z: expected J >= 2 views per group, got shape \(4, 1, 3\)"),
    ("info_nce", lambda: simvae_fast.info_nce(INTS), TypeError, r"z: expected a floating-point tensor, got .*int64"),
    ("info_nce", lambda: simvae_fast.info_nce(GOOD, temperature=-0.1), ValueError,
     r"temperature: expected a positive finite value, got -0.1"),
    ("info_nce", lambda: simvae_fast.info_nce(GOOD, temperature=torch.ones(2)), ValueError,
     r"temperature: expected a float or a 0-dim floating-point tensor, got shape \(2,\)"),
    ("info_nce", lambda: simvae_fast.info_nce(GOOD, temperature=torch.tensor(0.5, device="meta")), ValueError,
     r"temperature: expected a tensor on z's device cpu, got meta"),
    ("info_nce", lambda: simvae_fast.info_nce(GOOD, positives="max"), ValueError,
     r"positives: expected one of 'mean', 'logsumexp', got 'max'"),
    ("info_nce", lambda: simvae_fast.info_nce(GOOD, reduction="avg"), ValueError,
     r"reduction: expected one of 'mean', 'sum', 'none', got 'avg'"),
    ("reference.reparameterize", lambda: reference.reparameterize(GOOD, GOOD, FLAT), ValueError,
     r"eps: expected a 3-D tensor .*got shape \(4, 3\)"),
    ("reference.gaussian_entropy", lambda: reference.gaussian_entropy([0.0]), TypeError,
     r"logvar: expected a torch.Tensor of shape \[G, J, D\], got list"),
    ("reference.grouped_prior_log_prob", lambda: reference.grouped_prior_log_prob(GOOD, sigma2=float("inf")),
     ValueError, r"sigma2: expected a positive finite value, got inf"),
    ("reference.info_nce", lambda: reference.info_nce(GOOD, temperature="0.5"), TypeError,
     r"temperature: expected a positive float, got str '0.5'"),
    ("functional.info_nce_loss", lambda: functional.info_nce_loss([FLAT, torch.randn(4, 5)]), ValueError,
     r"views: expected a list of J tensors of one shape \[G, D\], got \[\(4, 3\), \(4, 5\)\]"),
    ("functional.nt_xent_loss", lambda: functional.nt_xent_loss(FLAT, torch.randn(5, 3)), ValueError,
     r"out1: expected the shape of out0 \(4, 3\), got \(5, 3\)"),
    ("functional.simclr_loss_func", lambda: functional.simclr_loss_func(FLAT, torch.tensor([0, 0, 1, 2])),
     ValueError, r"indexes: expected every index to occur equally often.*got occurrence counts \[1, 2\]"),
    ("nn.NTXentLoss", lambda: NTXentLoss(memory_bank_size=128), ValueError,
     r"memory_bank_size: .*expected 0, got 128"),
    ("nn.NTXentLoss", lambda: NTXentLoss(temperature=0), ValueError,
     r"temperature: expected a positive finite value, got 0.0"),
    ("nn.InfoNCELoss", lambda: InfoNCELoss(positives="all"), ValueError,
     r"positives: expected one of 'mean', 'logsumexp', got 'all'"),
    ("nn.InfoNCELoss", lambda: InfoNCELoss()(FLAT), ValueError, r"z: expected a 3-D tensor .*got shape \(4, 3\)"),
    ("nn.SimVAELoss", lambda: SimVAELoss(likelihood="poisson"), ValueError,
     r"likelihood: expected one of 'bernoulli', 'gaussian', got 'poisson'"),
    ("nn.SimVAELoss", lambda: SimVAELoss(sigma2=-1.0), ValueError, r"sigma2: expected a positive finite value, got -1.0"),
    ("nn.SimVAELoss", lambda: SimVAELoss()(IMAGES, IMAGES[..., :4], GOOD, GOOD, seed=1), ValueError,
     r"x_out: expected the shape of x \(4, 2, 1, 5, 5\), got \(4, 2, 1, 5, 4\)"),
    ("functional.simvae_loss", lambda: functional.simvae_loss(IMAGES, IMAGES, GOOD, GOOD, reduction="none"),
     ValueError, r"reduction: expected one of 'sum', 'mean', got 'none'"),
    ("functional.simvae_loss", lambda: functional.simvae_loss(IMAGES[:3], IMAGES[:3], GOOD, GOOD), ValueError,
     r"x: expected \[G, J, ...\] with \(G, J\) = \(4, 2\) of mu, got \(3, 2, 1, 5, 5\)"),
]


@pytest.mark.parametrize("name, call, error, pattern", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_a_clear_error(name, call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()
