// What the ops' C++ registrations share: the kernels' Dtype of a tensor (dtype.h has the enum and the
// accumulation type; it stays torch-free for the .cu files), the dispatch from a Dtype to its C++ type, and
// the input checks of both ops (latent_op_checks.h adds the latent op's own). The checks are templates over
// the tensor type: torch::stable::Tensor for the stable-ABI CPU ops, and at::Tensor for the CUDA
// registrations until they move onto the stable ABI too (#16 phase 2); both have dim(), size(), sizes(),
// scalar_type() and device().
// Errors are STD_TORCH_CHECK (std::runtime_error, a RuntimeError in Python), each naming the argument, what
// was expected and what was given.
#pragma once
#include <torch/headeronly/core/DeviceType.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Exception.h>
#include <torch/headeronly/util/Half.h>

#include <cstdint>
#include <string>

#include "dtype.h"

namespace simvae {

// The kernels' Dtype of a torch dtype; an error for any other than float64/32/16 and bfloat16.
inline Dtype dtype_of(torch::headeronly::ScalarType type, const char* name) {
  using torch::headeronly::ScalarType;
  STD_TORCH_CHECK(type == ScalarType::Double || type == ScalarType::Float || type == ScalarType::Half ||
                      type == ScalarType::BFloat16,
                  name, ": expected float64, float32, float16 or bfloat16, got ", type);
  if (type == ScalarType::Double) return Dtype::kFloat64;
  if (type == ScalarType::Float) return Dtype::kFloat32;
  return type == ScalarType::Half ? Dtype::kFloat16 : Dtype::kBFloat16;
}

// The torch dtype of the per-group/per-row outputs and upstream gradients: the accumulation type.
inline torch::headeronly::ScalarType accumulation_scalar_type(Dtype dtype) {
  return accumulates_in_double(dtype) ? torch::headeronly::ScalarType::Double : torch::headeronly::ScalarType::Float;
}

// f(scalar_t{}) with scalar_t the C++ type of dtype: double, float, c10::Half or c10::BFloat16. Called as
// dispatch_dtype(dtype, [&](auto tag) { using scalar_t = decltype(tag); ... }).
template <typename F>
decltype(auto) dispatch_dtype(Dtype dtype, F&& f) {
  switch (dtype) {
    case Dtype::kFloat64: return f(double{});
    case Dtype::kFloat32: return f(float{});
    case Dtype::kFloat16: return f(c10::Half{});
    case Dtype::kBFloat16: break;
  }
  return f(c10::BFloat16{});
}

// "[4, 2, 3]"
template <typename Tensor>
std::string shape_string(const Tensor& t) {
  std::string out = "[";
  for (int64_t d = 0; d < t.dim(); ++d) out += (d ? ", " : "") + std::to_string(t.size(d));
  return out + "]";
}

// "cpu", "cuda:0", ...
template <typename Device>
std::string device_string(const Device& device) {
  using torch::headeronly::DeviceType;
  const DeviceType type = device.type();
  std::string out = type == DeviceType::CPU    ? "cpu"
                    : type == DeviceType::CUDA ? "cuda"
                    : type == DeviceType::Meta ? "meta"
                                               : "device type " + std::to_string(static_cast<int>(type));
  return device.index() >= 0 ? out + ":" + std::to_string(device.index()) : out;
}

// A [G, J, D] tensor.
template <typename Tensor>
void check_groups(const Tensor& t, const char* name) {
  STD_TORCH_CHECK(t.dim() == 3, name, ": expected a 3-D tensor [G, J, D], got ", shape_string(t));
}

// t like ref in shape, dtype and device.
template <typename Tensor>
void check_like(const Tensor& t, const char* name, const Tensor& ref, const char* ref_name) {
  STD_TORCH_CHECK(t.sizes() == ref.sizes(), name, ": expected shape ", shape_string(ref), " like ", ref_name,
                  ", got ", shape_string(t));
  STD_TORCH_CHECK(t.scalar_type() == ref.scalar_type(), name, ": expected dtype ", ref.scalar_type(), " like ",
                  ref_name, ", got ", t.scalar_type());
  STD_TORCH_CHECK(t.device() == ref.device(), name, ": expected device ", device_string(ref.device()), " like ",
                  ref_name, ", got ", device_string(t.device()));
}

}  // namespace simvae
