"""The compiled-code check (benchmarks/kernel_check.py) can fail: its SASS parsing, rules and expected-failure
bookkeeping on canned cuobjdump text, and end to end on tiny Triton kernels compiled for sm_90 through the
stand-in driver — one that spills, one whose fp16 matrix product runs on FFMA instead of tensor cores, one
autotuned over two configs (both compiled and checked) — and on a
tiny .cu file compiled with nvcc -maxrregcount=16 (ptxas keeps 24 on sm_90: it spills).

Shown to fail: with the spill rule removed from kernel_check.check, test_triton_spill_and_missing_tensor_cores
and test_cuda_spill fail (the spilling kernels pass); with the HMMA/HGMMA rule removed, the FFMA product passes
and the same test fails; counting "HMMA" opcodes as FFMA in sass.fold makes test_parse_sass fail.
"""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks")
sys.path.insert(0, BENCHMARKS)

import sass  # noqa: E402

RESOURCES = """
Resource usage:
 Common:
  GLOBAL:0
 Function tiled:
  REG:255 STACK:712 SHARED:1024 LOCAL:0 CONSTANT[0]:568 TEXTURE:0 SURFACE:0 SAMPLER:0
 Function rows:
  REG:40 STACK:0 SHARED:0 LOCAL:0 CONSTANT[0]:400 TEXTURE:0 SURFACE:0 SAMPLER:0
"""
SASS_TEXT = """
\tcode for sm_90a
\t\tFunction : tiled
        /*0010*/                   HGMMA.64x64x16.F32.BF16 R24, gdesc[UR4].tnspB, RZ, !UPT ;   /* 0x40e0 */
        /*0020*/              @!P0 STL.64 [R1+0x10], R4 ;                                      /* 0x0000 */
        /*0030*/                   LDL R6, [R1+0x10] ;                                          /* 0x0000 */
        /*0040*/               @P1 MUFU.EX2 R7, R26 ;                                           /* 0x0000 */
        /*0050*/                   FFMA.FTZ R1, R2, R3, R4 ;                                    /* 0x0000 */
        /*0060*/                   FFMA R1, R2, R3, R4 ;                                        /* 0x0000 */
\t\tFunction : rows
        /*0010*/                   HMMA.16816.F32 R4, R8, R12, R4 ;                             /* 0x0000 */
        /*0020*/                   MUFU.RCP R7, R26 ;                                           /* 0x0000 */
        /*0030*/                   EXIT ;                                                       /* 0x0000 */
"""


def test_parse_sass():
    usage = sass.parse_resources(RESOURCES)
    assert usage["tiled"]["REG"] == 255 and usage["tiled"]["STACK"] == 712 and usage["rows"]["SHARED"] == 0
    counts = sass.parse_instructions(RESOURCES + SASS_TEXT)
    tiled = sass.fold("tiled", usage["tiled"], counts["tiled"])
    counted = (tiled.hgmma, tiled.hmma, tiled.ffma, tiled.mufu_ex2, tiled.spill_stores, tiled.spill_loads)
    assert counted == (1, 0, 2, 1, 1, 1)
    assert tiled.spills and tiled.tensor_core == 1 and tiled.total == 6
    rows = sass.fold("rows", usage["rows"], counts["rows"])
    assert (rows.hmma, rows.ffma, rows.mufu_ex2, rows.spills) == (1, 0, 0, False)


def test_blocks_per_sm():
    assert sass.blocks_per_sm(255, 128, 0) == 2  # 4 warps x 8192 registers: 2 blocks of 65536
    assert sass.blocks_per_sm(32, 128, 0) == 16  # warp limit: 64 warps / 4
    assert sass.blocks_per_sm(32, 32, 0) == 32  # block limit
    assert sass.blocks_per_sm(32, 128, 100 * 1024) == 2  # 228 KB per SM, 1 KB reserved per block
    assert sass.blocks_per_sm(32, 128, 228 * 1024) == 0  # more than a block may have


def _row(kc, key, **sass_fields):
    source, kernel = key.split("::")
    info = sass.Sass(function=kernel, registers=64, stack=0, static_shared=0, spill_stores=0, spill_loads=0, hmma=0,
                     hgmma=0, ffma=0, mufu_ex2=0, total=10)
    for name, value in sass_fields.pop("sass", {}).items():
        setattr(info, name, value)
    fields = dict(source=source, kernel=kernel, op="info_nce", dtype="bf16", dim="128", config="", threads=128,
                  shared=0, matmul=True, sass=info)
    fields.update(sass_fields)
    return kc.Row(**fields)


def test_rules_and_expected_failures():
    import kernel_check as kc

    rows = [
        _row(kc, "kernels/a.py::tensor_cores", sass={"hgmma": 8}),
        _row(kc, "kernels/a.py::no_tensor_cores"),
        _row(kc, "kernels/a.py::fp64_product", dtype="fp64"),  # fp64 has no HMMA rule (nor a spill rule)
        _row(kc, "kernels/a.py::rows", matmul=False, sass={"stack": 16, "spill_stores": 2}),
        _row(kc, "kernels/a.py::rows_fp64", matmul=False, dtype="fp64", sass={"stack": 16}),
        _row(kc, "kernels/b.py::prior_spill", op="prior", matmul=False, sass={"stack": 8}),  # not InfoNCE/latent
        _row(kc, "kernels/a.py::big_shared", sass={"hmma": 4}, shared=232449),
        _row(kc, "kernels/a.py::fixed", sass={"hgmma": 8}),
    ]
    expected = {"kernels/a.py::no_tensor_cores": "", "kernels/a.py::fixed": "", "kernels/a.py::renamed": ""}
    unexpected, still, now_pass, unseen = kc.verdict(rows, expected)
    assert [r.kernel for r in unexpected] == ["rows", "big_shared"]
    assert "spills" in unexpected[0].failures[0] and "shared memory" in unexpected[1].failures[0]
    assert still == ["kernels/a.py::no_tensor_cores"] and "without HMMA" in rows[1].failures[0]
    assert now_pass == ["kernels/a.py::fixed"] and unseen == ["kernels/a.py::renamed"]
    assert not rows[2].failures and not rows[4].failures and not rows[5].failures


def test_split_cuda_name():
    from cuda_cubins import split_name

    assert split_name("void ns::(anonymous namespace)::lse_kernel<__half, float>(__half const*, long)") == (
        "lse_kernel", ["__half", "float"])
    assert split_name("void tile<float, 128, Shape<2, 3> >(float*)") == ("tile", ["float", "128", "Shape<2, 3>"])
    assert split_name("void plain(int)") == ("plain", [])


# Compiled for sm_90 in a child process: the stand-in driver needs TRITON_INTERPRET unset when triton decorates.
TRITON_SCRIPT = textwrap.dedent('''
    import json, sys
    import kernel_check, standin_driver
    import torch, triton, triton.language as tl

    @triton.jit
    def row_softmax_kernel(X, Y, BLOCK: tl.constexpr):
        # a BLOCK x BLOCK fp32 tile live across a row reduction, in one warp: 512 values per thread, spills
        r = tl.arange(0, BLOCK)
        x = tl.load(X + r[:, None] * BLOCK + r[None, :])
        tl.store(Y + r[:, None] * BLOCK + r[None, :], x - tl.max(x, axis=1)[:, None])

    @triton.jit
    def product_kernel(A, B, C, UPCAST: tl.constexpr, BLOCK: tl.constexpr):
        r = tl.arange(0, BLOCK)
        a = tl.load(A + r[:, None] * BLOCK + r[None, :])
        b = tl.load(B + r[:, None] * BLOCK + r[None, :])
        if UPCAST:  # fp32 operands, exact: FFMA, no tensor cores
            a, b = a.to(tl.float32), b.to(tl.float32)
        tl.store(C + r[:, None] * BLOCK + r[None, :], tl.dot(a, b, input_precision="ieee"))

    @triton.autotune([triton.Config({}, num_warps=1), triton.Config({}, num_warps=2)], key=[])
    @triton.jit
    def tuned_kernel(X):
        tl.store(X + tl.arange(0, 32), 1.0)

    class Case:  # as kernel_cases.Case: the launching op's name, input dtype and D
        op = "info_nce"
        dim = 64
        dtype_name = "fp16"

    out = {}
    with standin_driver.active():
        x = torch.empty(128, 128)
        row_softmax_kernel[(1,)](x, x, BLOCK=128, num_warps=1)
        a, c = torch.empty(32, 32, dtype=torch.float16), torch.empty(32, 32)
        product_kernel[(1,)](a, a, c, UPCAST=False, BLOCK=32)
        product_kernel[(1,)](a, a, c, UPCAST=True, BLOCK=32)
        tuned_kernel[(1,)](x)
        compiled = {k.kernel.hash: k for k in standin_driver.captured()}
        for i, (h, grid) in enumerate(standin_driver.launches()):
            row = kernel_check._triton_row(Case, compiled[h], grid)
            out[f"{row.kernel}{i}"] = dict(failures=kernel_check.check(row), stack=row.sass.stack,
                                           tensor_core=row.sass.tensor_core, ffma=row.sass.ffma, matmul=row.matmul,
                                           config=row.config)
    json.dump(out, sys.stdout)
''')


def _run_child(script, tmp_path):
    path = tmp_path / "child.py"
    path.write_text(script)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(PYTHONPATH=BENCHMARKS, TRITON_CACHE_DIR=str(tmp_path / "triton-cache"))
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_triton_spill_and_missing_tensor_cores(tmp_path):
    out = _run_child(TRITON_SCRIPT, tmp_path)
    spill, fast, slow = out["row_softmax_kernel0"], out["product_kernel1"], out["product_kernel2"]
    assert spill["stack"] > 0 and any("spills" in f for f in spill["failures"])
    assert fast["matmul"] and fast["tensor_core"] > 0 and fast["failures"] == []
    assert slow["matmul"] and slow["tensor_core"] == 0 and slow["ffma"] > 0
    assert slow["failures"] == ["matrix product without HMMA/HGMMA"]
    tuned = sorted(v["config"] for k, v in out.items() if k.startswith("tuned_kernel"))  # every config compiled
    assert len(tuned) == 3 and "warps=1" in tuned[0] and "warps=2" in tuned[-1]  # configs 1, 2, then the pick


CUDA_SOURCE = r"""
template <typename T>
__global__ void spilling_kernel(const T* x, T* y, int n) {
  float acc[64];
  for (int i = 0; i < 64; ++i) acc[i] = float(x[threadIdx.x + i * n]);
  for (int r = 0; r < 8; ++r)
    for (int i = 0; i < 64; ++i) acc[i] = acc[i] * acc[(i + r + 1) % 64] + acc[(i * 7) % 64];
  for (int i = 0; i < 64; ++i) y[threadIdx.x + i * n] = T(acc[i]);
}
template __global__ void spilling_kernel<float>(const float*, float*, int);
"""


@pytest.mark.skipif(not os.access("/usr/local/cuda/bin/nvcc", os.X_OK) and not shutil.which("nvcc"),
                    reason="needs nvcc")
def test_cuda_spill(tmp_path):
    import cuda_cubins
    import kernel_check as kc

    source, cubin = tmp_path / "spill.cu", tmp_path / "spill.cubin"
    source.write_text(CUDA_SOURCE)
    nvcc = cuda_cubins.nvcc() or shutil.which("nvcc")
    subprocess.run([nvcc, "-cubin", "-arch=sm_90", "-O3", "-maxrregcount=16", "-o", str(cubin), str(source)],
                   check=True, capture_output=True)
    (mangled, info), = sass.summarise(str(cubin)).items()
    name, args = cuda_cubins.split_name(cuda_cubins.demangle([mangled])[mangled])
    assert (name, args) == ("spilling_kernel", ["float"])
    row = kc.Row(source="x.cu", kernel=name, op="latent", dtype="fp32", dim="any", config="", threads=0,
                 shared=info.static_shared, matmul=False, sass=info)
    assert info.spills and any("spills" in f for f in kc.check(row))
    assert info.static_shared == 0  # no __shared__: nvcc 13 reports SHARED:1024, the system reserve, taken off


def test_shared_reserve_counted_once():
    """nvcc 13 reports a kernel's static shared memory with the system's 1 KB reserve in it: fold takes it off,
    and blocks_per_sm adds it once. 233472 B per SM: three blocks of 75 KB + 1 KB fit, three of 76 KB + 1 KB not
    (with the reserve counted twice, 75 KB would give 2)."""
    usage = {"REG": 32, "STACK": 0, "SHARED": 75 * 1024 + 1024}
    assert sass.fold("k", usage, {}, reserve_counted=True).static_shared == 75 * 1024
    assert sass.fold("k", usage, {}).static_shared == 76 * 1024
    assert sass.blocks_per_sm(32, 128, 75 * 1024) == 3 and sass.blocks_per_sm(32, 128, 76 * 1024) == 2


def test_tile_kernels_dynamic_shared():
    """The InfoNCE tile kernels' launch shared memory, read from csrc/cuda/info_nce_tiles.cuh: the bf16 forward
    at 128 dims holds Z_I and two Z_K buffers of 64 rows x (128 x 2 + 16) bytes, plus statistics (> 3 x 17408 B);
    the symmetric backward's Q exchange is larger than the forward's column partials; each fits two blocks per SM."""
    import cuda_cubins

    kernels = [cuda_cubins.CudaKernel("x.cu", "forward_tiles_kernel", ["__nv_bfloat16", "128"], None, 128),
               cuda_cubins.CudaKernel("x.cu", "backward_tiles_kernel", ["__nv_bfloat16", "128", "true"], None, 128),
               cuda_cubins.CudaKernel("x.cu", "prep_rows_kernel", ["float"], None, 128)]
    assert cuda_cubins.dynamic_shared(kernels, os.path.join(BENCHMARKS, "..", "csrc")) == []
    forward, backward, rows = (k.dynamic_shared for k in kernels)
    assert 3 * 64 * (128 * 2 + 16) < forward < backward and rows == 0
    assert 2 * (backward + sass.SM90_SHARED_RESERVED) <= sass.SM90_SHARED_PER_SM
