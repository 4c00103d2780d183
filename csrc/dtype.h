// The floating dtypes the kernels take, as one enum for every backend (the CPU ops dispatch on it, the CUDA
// launchers receive it), and the accumulation type of each: float64 accumulates in double, float32, float16
// and bfloat16 in float (torch's opmath type). Host and device C++, no torch: the .cu files include it too.
#pragma once
#include <type_traits>

namespace simvae {

enum class Dtype { kFloat64, kFloat32, kFloat16, kBFloat16 };

inline const char* dtype_name(Dtype dtype) {
  switch (dtype) {
    case Dtype::kFloat64: return "float64";
    case Dtype::kFloat32: return "float32";
    case Dtype::kFloat16: return "float16";
    case Dtype::kBFloat16: return "bfloat16";
  }
  return "?";
}

inline bool accumulates_in_double(Dtype dtype) { return dtype == Dtype::kFloat64; }

// acc_type<scalar_t>: double for double, float for float and the 16-bit types.
template <typename scalar_t>
using acc_type = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

}  // namespace simvae
