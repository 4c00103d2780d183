// The extension simvae_fast._C_cuda: the CUDA registrations of the ops defined in simvae_fast._C
// (csrc/cuda/*_cuda.cpp, launching the torch-free kernels of csrc/cuda/*.cu). Built only when the build's
// torch has CUDA and nvcc is found, imported only when the running torch has CUDA, so that a CUDA build
// environment never breaks the CPU kernels. Its registrations still use the ATen C++ API (built against one
// torch); #16 phase 2 moves them onto the stable ABI.
#include "python_module.h"

SIMVAE_PYTHON_MODULE(_C_cuda)
