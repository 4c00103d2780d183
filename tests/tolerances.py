"""How kernel results are compared with the float64 reference: relative to the reference's own magnitude.

assert_relative(actual, expected, tol, what) requires, in float64,
  - the same shape, and finite values wherever the reference is finite (an unwritten, NaN-poisoned element fails);
  - norm-wise relative error  ||a - e||_2 / ||e||_2 <= tol;
  - elementwise  |a_i - e_i| <= ELEMENT_FACTOR * tol * (|e_i| + mean_j |e_j|): each element against its own magnitude,
    with the tensor's mean magnitude as the floor for elements near zero.
Nothing is clamped to 1, so a result that is small in absolute terms (a mean-reduced gradient of 1e-4) is held to
the same relative standard as a large one: a kernel returning zeros has norm-wise error 1 and fails any tol < 1.
An all-zero reference must be matched to ZERO_ATOL (absolute), since it has no magnitude to be relative to.
"""
import torch

ELEMENT_FACTOR = 10.0  # elementwise errors may exceed the norm-wise bound on a few elements, not by 10x
ZERO_ATOL = 1e-12


def normwise_error(actual, expected):
    """||a - e|| / ||e|| in float64 (the absolute ||a - e|| when e is all zero)."""
    a, e = actual.detach().double(), expected.detach().double()
    diff = torch.linalg.vector_norm(a - e).item()
    norm = torch.linalg.vector_norm(e).item()
    return diff / norm if norm > 0 else diff


def assert_relative(actual, expected, tol, what):
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)}, expected {tuple(e.shape)}"
    if a.numel() == 0:
        return
    finite = torch.isfinite(e)
    assert torch.isfinite(a[finite]).all(), f"{what}: non-finite values where the reference is finite"
    assert torch.equal(torch.isnan(a[~finite]), torch.isnan(e[~finite])), f"{what}: NaN pattern differs"
    a, e = a[finite], e[finite]
    if e.numel() == 0:  # nothing finite to compare (e.g. the NaN of an empty mean), the NaN pattern matched
        return
    if not e.abs().max().item() > 0:
        err = a.abs().max().item()
        assert err <= ZERO_ATOL, f"{what}: max |value| {err:.3g} where the reference is exactly 0"
        return
    err = normwise_error(a, e)
    assert err <= tol, f"{what}: norm-wise relative error {err:.3g} > {tol:g} (||e|| = {e.norm():.3g})"
    bound = ELEMENT_FACTOR * tol * (e.abs() + e.abs().mean())
    worst = ((a - e).abs() / bound).max().item()
    assert worst <= 1.0, f"{what}: an element is off by {worst:.3g} x its bound {ELEMENT_FACTOR:g} tol (|e_i| + mean|e|)"
