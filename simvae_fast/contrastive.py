"""info_nce: InfoNCE / NT-Xent over groups of views, one public entry point.

Validates, picks a backend (simvae_fast.backends) and runs it. Backends are entries of IMPLEMENTATIONS,
each a function (z, temperature, normalize, positives, reduction) -> loss.
"""
from simvae_fast import reference
from simvae_fast._checks import check_choice, check_latent, check_positive
from simvae_fast.backends import resolve_backend

IMPLEMENTATIONS = {"reference": reference.info_nce}


def info_nce(z, *, temperature=0.5, normalize=True, positives="mean", reduction="mean", backend="auto"):
    """InfoNCE over the N = G*J rows of z [G, J, D]: the other views of a row's group are its positives,
    every other row is in its denominator (self-similarity excluded).

    temperature: a float, or a 0-dim tensor (its gradient is returned when it requires grad).
    positives: "mean" (SupCon L_out) or "logsumexp" (solo-learn); reduction: "mean", "sum" or "none" ([N]).
    For J = 2 this is SimCLR's NT-Xent.
    """
    check_latent("z", z)
    if z.shape[1] < 2:
        raise ValueError(f"z: expected J >= 2 views per group, got shape {tuple(z.shape)}")
    check_positive("temperature", temperature)
    check_choice("positives", positives, reference.POSITIVES)
    check_choice("reduction", reduction, reference.REDUCTIONS)
    name = resolve_backend(backend, z.device, tuple(IMPLEMENTATIONS))
    return IMPLEMENTATIONS[name](z, temperature, normalize, positives, reduction)
