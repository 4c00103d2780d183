// Argument checks of simvae_fast::info_nce_forward / info_nce_backward, shared by the CPU (stable ABI) and CUDA
// implementations (the public info_nce validates first; these guard direct calls of the ops). Templates over the
// tensor type as in op_common.h. Errors name the argument.
#pragma once
#include <cstdint>
#include <utility>

#include "op_common.h"

namespace simvae {

// z: [G, J >= 2, D] of a kernel dtype; temperature: a 0-dim tensor of z's accumulation dtype on z's device.
// Returns z's Dtype.
template <typename Tensor>
Dtype check_info_nce_inputs(const Tensor& z, const Tensor& temperature) {
  check_groups(z, "z");
  STD_TORCH_CHECK(z.size(1) >= 2, "z: expected J >= 2 views per group, got shape ", shape_string(z));
  const Dtype dtype = dtype_of(z.scalar_type(), "z");
  STD_TORCH_CHECK(temperature.dim() == 0, "temperature: expected a 0-dim tensor, got shape ",
                  shape_string(temperature));
  STD_TORCH_CHECK(temperature.scalar_type() == accumulation_scalar_type(dtype), "temperature: expected dtype ",
                  accumulation_scalar_type(dtype), " (the accumulation dtype of z), got ", temperature.scalar_type());
  STD_TORCH_CHECK(temperature.device() == z.device(), "temperature: expected device ", device_string(z.device()),
                  " like z, got ", device_string(temperature.device()));
  return dtype;
}

// The backward's per-row inputs: N = G*J elements each, on z's device.
template <typename Tensor>
void check_info_nce_rows(const Tensor& z, const Tensor& grad_loss, const Tensor& lse, const Tensor& pos) {
  const int64_t N = z.size(0) * z.size(1);
  for (const auto& [name, t] : {std::pair<const char*, const Tensor*>{"grad_loss", &grad_loss},
                                {"lse", &lse},
                                {"positive", &pos}}) {
    STD_TORCH_CHECK(t->numel() == N, name, ": expected N = G*J = ", N, " elements, got shape ", shape_string(*t));
    STD_TORCH_CHECK(t->device() == z.device(), name, ": expected device ", device_string(z.device()),
                    " like z, got ", device_string(t->device()));
  }
}

}  // namespace simvae
