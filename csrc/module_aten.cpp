// The extension simvae_fast._C_aten: the CPU kernels not yet on the stable ABI (info_nce_cpu.cpp, which
// still defines its own schemas). They use the ATen C++ API, so this module loads only into the torch it was
// built against. #16 phase 2 ports them into simvae_fast._C and removes this module.
#include "python_module.h"

SIMVAE_PYTHON_MODULE(_C_aten)
