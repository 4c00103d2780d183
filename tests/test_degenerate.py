"""Degenerate shapes on every public entry and backend (reference, cpu, triton under the interpreter), each case in
its own child process.

G = 0, D = 0, one group, empty drop-in batches, non-contiguous empty views, each reduction: a call returns
correctly shaped results equal to the float64 reference (an empty mean is NaN, as in torch) with correctly shaped
gradients, every output element written (fresh allocations are NaN-poisoned in the child), or raises a ValueError
naming the argument. Never a signal, never a hang.

Each case runs in a process forked from a zygote that imported torch and simvae_fast once and started no thread
pool (forking is safe then); a signal, an abort or a hang (TIMEOUT_S) fails that one case and the run goes on.
Shown to catch a crash: with issue 15's SIGFPE put back into csrc/info_nce_cpu.cpp (an integer division by N), the
cpu cases with G = 0 fail with "killed by SIGFPE" and every other case still runs and passes.
"""
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback

import pytest
import torch

import simvae_fast
from simvae_fast import functional, nn
from simvae_fast.backends import backends
from tolerances import assert_relative

TIMEOUT_S = 120
TOL = {torch.float64: 1e-9, torch.float32: 2e-5}
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"  # Triton on CPU tensors needs the interpreter
BACKENDS = ["reference"] + [b for b in ("cpu", "triton") if backends()[b].usable and (b != "triton" or INTERPRETED)]


def values(shape, dtype, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


# z makers: name -> (dtype -> z [G, J, D])
LATENTS = {
    "G=0": lambda dt: values((0, 2, 8), dt),
    "G=0,D=0": lambda dt: values((0, 2, 0), dt),
    "D=0": lambda dt: values((3, 2, 0), dt),
    "G=1": lambda dt: values((1, 2, 8), dt),
    "G=1,J=3": lambda dt: values((1, 3, 5), dt),
    "G=0 permuted view": lambda dt: values((2, 0, 8), dt).permute(1, 0, 2),
    "G=0 strided view": lambda dt: values((0, 4, 8), dt)[:, ::2],
    "D=0 offset view": lambda dt: values((3, 2, 4), dt)[:, :, 4:],
    "J=1": lambda dt: values((3, 1, 4), dt),  # simvae_latent only (prior "standard"); info_nce needs J >= 2
    "G=0,J=1": lambda dt: values((0, 1, 4), dt),
}
INFO_NCE_LATENTS = [name for name in LATENTS if "J=1" not in name]


def assert_same(got, expected, tol, what):
    for k, (g, e) in enumerate(zip(got, expected)):
        assert g.shape == e.shape, f"{what} output {k}: shape {tuple(g.shape)}, expected {tuple(e.shape)}"
        assert_relative(g, e, tol, f"{what} output {k}")


def info_nce_outputs(backend, z, reduction, normalize, positives):
    """loss, dL/dz, dL/dtau for L = sum(loss)."""
    z = z.detach().clone().requires_grad_(True)
    t = torch.tensor(0.5, dtype=z.dtype, requires_grad=True)
    loss = simvae_fast.info_nce(z, temperature=t, normalize=normalize, positives=positives, reduction=reduction,
                                backend=backend)
    assert loss.dtype == z.dtype and loss.shape == ((z.shape[0] * z.shape[1],) if reduction == "none" else ())
    dz, dt = torch.autograd.grad(loss.sum(), (z, t))
    assert dz.shape == z.shape and dz.dtype == z.dtype
    return loss, dz, dt


def info_nce_case(backend, latent, dtype, reduction, normalize, positives):
    def case():
        z = LATENTS[latent](dtype)
        got = info_nce_outputs(backend, z, reduction, normalize, positives)
        expected = info_nce_outputs("reference", z.double(), reduction, normalize, positives)
        if z.shape[0] * z.shape[1] == 0 and reduction == "mean":
            assert torch.isnan(got[0]), "an empty mean is NaN"
        assert_same(got, expected, TOL[dtype], f"info_nce {backend}")
    return case


def latent_outputs(backend, mu, logvar, eps, prior):
    mu, logvar = mu.detach().clone().requires_grad_(True), logvar.detach().clone().requires_grad_(True)
    out = simvae_fast.simvae_latent(mu, logvar, prior=prior, eps=eps, seed=None if eps is not None else 7,
                                    backend=backend)
    assert [tuple(o.shape) for o in out] == [tuple(mu.shape), (mu.shape[0],), (mu.shape[0],)]
    weights = [values(o.shape, o.dtype, seed=k + 1) for k, o in enumerate(out)]
    grads = torch.autograd.grad(sum((w * o).sum() for w, o in zip(weights, out)), (mu, logvar))
    return [o.detach() for o in out] + list(grads)


def latent_case(backend, latent, noise):
    def case():
        mu = LATENTS[latent](torch.float64)
        logvar, eps = 0.3 * values(mu.shape, torch.float64, 1), values(mu.shape, torch.float64, 2)
        eps = eps if noise == "eps" else None
        prior = "gaussian" if mu.shape[1] >= 2 else "standard"
        got = latent_outputs(backend, mu, logvar, eps, prior)
        expected = latent_outputs("reference", mu, logvar, eps, prior)
        assert_same(got, expected, 1e-9 if noise == "eps" else 1e-5, f"simvae_latent {backend} {noise}")
    return case


def raises_case(call, match):
    def case():
        with pytest.raises(ValueError, match=match):
            call()
    return case


def loss_and_grads(loss, inputs):
    """The loss and its gradients in `inputs` (a parameter-free loss over zero rows still has empty gradients)."""
    return [loss.detach()] + list(torch.autograd.grad(loss, inputs))


def empty_rows(*shape):
    return torch.zeros(*shape, requires_grad=True)


def drop_in_cases(backend):
    """The functional losses and the nn modules on empty batches: NaN (an empty mean), empty gradients, and the
    same as with backend="reference"."""
    def info_nce_loss(b):
        z = empty_rows(0, 3, 8)
        return loss_and_grads(functional.info_nce_loss(z, backend=b), [z])

    def info_nce_loss_views(b):
        v = [empty_rows(0, 8) for _ in range(2)]
        return loss_and_grads(functional.info_nce_loss(v, normalize=False, positives="logsumexp", backend=b), v)

    def nt_xent_loss(b):
        out0, out1 = empty_rows(0, 8), empty_rows(0, 8)
        return loss_and_grads(functional.nt_xent_loss(out0, out1, backend=b), [out0, out1])

    def simclr_loss_func(b):
        z = empty_rows(0, 8)
        return loss_and_grads(functional.simclr_loss_func(z, torch.zeros(0, dtype=torch.long), backend=b), [z])

    def simvae_loss(b, reduction, G, D):
        mu, logvar = empty_rows(G, 2, D), empty_rows(G, 2, D)
        x = torch.rand(G, 2, 1, 3, 3, generator=torch.Generator().manual_seed(0))
        x_out = empty_rows(G, 2, 1, 3, 3)
        out = nn.SimVAELoss(reduction=reduction, backend=b)(x, x_out, mu, logvar, seed=3)
        return loss_and_grads(out.loss, [mu, logvar, x_out]) + [p.detach() for p in out[1:]]

    calls = {
        "info_nce_loss G=0": (info_nce_loss, True),
        "info_nce_loss list of empty views": (info_nce_loss_views, True),
        "nt_xent_loss B=0": (nt_xent_loss, True),
        "simclr_loss_func N=0": (simclr_loss_func, True),
        "SimVAELoss sum G=0": (lambda b: simvae_loss(b, "sum", 0, 4), False),
        "SimVAELoss mean G=0": (lambda b: simvae_loss(b, "mean", 0, 4), True),
        "SimVAELoss mean D=0": (lambda b: simvae_loss(b, "mean", 3, 0), False),
    }

    def make(fn, nan):
        def case():
            got, expected = fn(backend), fn("reference")
            assert bool(torch.isnan(got[0])) == nan, f"loss {got[0]}: expected {'NaN' if nan else 'a number'}"
            assert_same(got, expected, 1e-5, f"{backend}")
        return case

    return {f"{name} [{backend}]": make(fn, nan) for name, (fn, nan) in calls.items()}


def module_cases():
    """The nn modules with no backend argument (auto: cpu when built) on empty batches."""
    def nt_xent():
        out0, out1 = empty_rows(0, 16), empty_rows(0, 16)
        loss = nn.NTXentLoss()(out0, out1)
        grads = torch.autograd.grad(loss, (out0, out1))
        assert torch.isnan(loss) and [g.shape for g in grads] == [out0.shape, out1.shape]

    def info_nce_learnable():
        module = nn.InfoNCELoss(learnable_temperature=True)
        views = empty_rows(0, 4, 16)
        loss = module(views)
        dz, dlog_t = torch.autograd.grad(loss, (views, module.log_temperature))
        assert torch.isnan(loss) and dz.shape == views.shape and dlog_t.item() == 0.0

    return {"NTXentLoss B=0 [auto]": nt_xent, "InfoNCELoss learnable G=0 [auto]": info_nce_learnable}


def all_cases():
    cases = {}
    for backend in BACKENDS:
        for latent in INFO_NCE_LATENTS:
            for reduction in ("mean", "sum", "none"):
                cases[f"info_nce {latent} {reduction} [{backend}]"] = info_nce_case(
                    backend, latent, torch.float64, reduction, True, "mean")
            cases[f"info_nce {latent} none unnormalised logsumexp [{backend}]"] = info_nce_case(
                backend, latent, torch.float64, "none", False, "logsumexp")
        for latent in ("G=0", "D=0"):
            cases[f"info_nce {latent} mean float32 [{backend}]"] = info_nce_case(
                backend, latent, torch.float32, "mean", True, "mean")
        for latent in ("G=0", "G=0,D=0", "D=0", "G=1", "G=0 permuted view", "D=0 offset view", "J=1", "G=0,J=1"):
            for noise in ("eps", "seed"):
                cases[f"simvae_latent {latent} {noise} [{backend}]"] = latent_case(backend, latent, noise)
        cases[f"info_nce J=1 G=0 raises [{backend}]"] = raises_case(
            lambda b=backend: simvae_fast.info_nce(torch.zeros(0, 1, 8), backend=b), "z")
        cases[f"simvae_latent J=1 gaussian raises [{backend}]"] = raises_case(
            lambda b=backend: simvae_fast.simvae_latent(torch.zeros(0, 1, 8), torch.zeros(0, 1, 8), backend=b),
            "prior")
        if backend != "reference":
            cases.update(drop_in_cases(backend))
    cases.update(module_cases())
    return cases


CASES = all_cases()


# --- The zygote: `python tests/test_degenerate.py --zygote` reads "case<TAB>output file" lines and answers each
# with one line: "exit <code>", "signal <name>" or "timeout", after running the case in a fork of itself. ---

def warm_up():
    """One small call of each op on each backend, on one thread: the lazy set-up (dispatch tables, the Triton
    interpreter's imports) is then done once, in the zygote, and no OpenMP pool exists when it forks."""
    torch.set_num_threads(1)
    z = values((3, 2, 4), torch.float32).requires_grad_(True)
    for backend in BACKENDS:
        simvae_fast.info_nce(z, backend=backend).backward()
        torch.autograd.backward(simvae_fast.simvae_latent(z, z, seed=1, backend=backend)[0].sum())
    assert len(os.listdir("/proc/self/task")) == 1, "the zygote must be single-threaded to fork safely"


def run_in_child(name, output, threads):
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    code = 1
    try:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(True)
        torch.utils.deterministic.fill_uninitialized_memory = True  # unwritten outputs show up as NaN
        CASES[name]()
        code = 0
    except BaseException:  # noqa: BLE001 - everything, reported in the output file
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def zygote():
    threads = torch.get_num_threads()
    warm_up()
    for line in sys.stdin:
        name, output = line.rstrip("\n").split("\t")
        pid = os.fork()
        if pid == 0:
            run_in_child(name, output, threads)
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                status = None
                break
            time.sleep(0.005)
        if status is None:
            answer = "timeout"
        elif os.WIFSIGNALED(status):
            answer = f"signal {signal.Signals(os.WTERMSIG(status)).name}"
        else:
            answer = f"exit {os.WEXITSTATUS(status)}"
        print(answer, flush=True)


@pytest.fixture(scope="module")
def child():
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")  # no thread pool in the zygote: forking it is safe
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--zygote"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    with tempfile.TemporaryDirectory() as tmp:
        def run(name):
            output = os.path.join(tmp, "case.out")
            proc.stdin.write(f"{name}\t{output}\n")
            proc.stdin.flush()
            answer = proc.stdout.readline().strip()
            with open(output) as f:
                return answer, f.read()
        yield run
    proc.stdin.close()
    proc.wait(timeout=60)


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in CASES])
def test_degenerate(child, name):
    answer, output = child(name)
    if answer == "exit 0":
        return
    what = {"timeout": f"hung (killed after {TIMEOUT_S} s)"}.get(answer, answer.replace("signal", "killed by"))
    pytest.fail(f"{name}: {what}\n{output[-4000:]}", pytrace=False)


if __name__ == "__main__" and sys.argv[1:] == ["--zygote"]:
    zygote()
