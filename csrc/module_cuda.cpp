// The extension simvae_fast._C_cuda: the CUDA registrations of the ops defined in simvae_fast._C
// (csrc/cuda/*_cuda.cpp, launching the torch-free kernels of csrc/cuda/*.cu). Built only when the build's torch
// has CUDA and nvcc is found, imported only when the running torch has CUDA, and a failed build of it leaves the
// install and the CPU kernels working (setup.py), so a CUDA build environment never breaks the CPU kernels.
//
// Its registrations stay on the ATen C++ API, so it loads only into the torch it was built against (the loader
// compares versions before importing it). Why not the stable ABI like _C: the CUDA InfoNCE reads two of torch's
// global switches per call, at::globalContext().deterministicAlgorithms() (the backward without atomics) and
// allowTF32CuBLAS() (float32 on the TF32 tensor cores), and the stable C shims of torch 2.13 / 2.14
// (torch/csrc/stable/c/shim.h, torch/csrc/inductor/aoti_torch/c/shim.h) have no accessor for either. Passing
// them in from Python would add two arguments to the schemas the CPU kernels share and move the read from the
// kernel call into Python code that torch.compile evaluates at trace time, a change no GPU here can test.
// What the stable ABI would give this module, loading into another torch of the same CUDA major, needs a
// CUDA torch and a matching nvcc at build time anyway.
#include "python_module.h"

SIMVAE_PYTHON_MODULE(_C_cuda)
