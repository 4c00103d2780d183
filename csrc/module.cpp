// The extension module simvae_fast._C: an empty Python module whose import loads the ops that the other
// sources register with TORCH_LIBRARY_FRAGMENT / TORCH_LIBRARY_IMPL. Python calls torch.ops.simvae_fast.*.
// WITH_CUDA tells simvae_fast.backends whether the CUDA kernels were compiled in.
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(simvae_fast, m) {}

static PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* module = PyModule_Create(&module_def);
  if (module == nullptr) return nullptr;
#ifdef SIMVAE_FAST_WITH_CUDA
  PyModule_AddIntConstant(module, "WITH_CUDA", 1);
#else
  PyModule_AddIntConstant(module, "WITH_CUDA", 0);
#endif
  return module;
}
