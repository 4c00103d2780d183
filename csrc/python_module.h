// SIMVAE_PYTHON_MODULE(name): the module init of an extension simvae_fast.<name>, an empty Python module whose
// import loads the shared library, whose static initialisers register its ops with torch's dispatcher
// (Python calls torch.ops.simvae_fast.*). CPython's limited API only (the build sets Py_LIMITED_API), so the
// same file serves every Python from 3.10 on.
#pragma once
#include <Python.h>

#define SIMVAE_PYTHON_MODULE(name)                                                                        \
  static PyModuleDef simvae_module_def = {PyModuleDef_HEAD_INIT, #name, nullptr, -1, nullptr, nullptr, \
                                          nullptr, nullptr, nullptr};                                     \
  PyMODINIT_FUNC PyInit_##name(void) { return PyModule_Create(&simvae_module_def); }
