// CUDA registrations of simvae_fast::info_nce_forward / info_nce_backward (schemas in csrc/info_nce_cpu.cpp):
// check the tensors, allocate outputs and one workspace (O(N D + N^2 / 64) bytes, info_nce_plan.h), and call the
// torch-free launchers of info_nce.cu on the current stream. The temperature stays on the device (no host sync).
// torch.use_deterministic_algorithms(True) selects the backward without atomics, and torch's TF32 switch for
// float32 matrix products (torch.backends.cuda.matmul.allow_tf32, or get_float32_matmul_precision() != "highest":
// at::globalContext().allowTF32CuBLAS()) lets float32 rows of up to 128 dims run on the TF32 tensor cores;
// otherwise float32 runs the exact FFMA kernels. Both are read per call; the op schema is unchanged.
// Half-precision rows wider than the tensor-core kernels take (D > 256) run the exact float32 kernels on an
// upcast copy (O(N D), next to O(N^2 D) work); dz comes back in z's dtype.
// Empty inputs launch nothing: G = 0 gives empty results; D = 0 (every logit 0) gives lse = log(N - 1),
// pos = 0 (mean) or log(J - 1) (logsumexp), an empty dz and dtau = 0, all by tensor fills.
#include <ATen/Context.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <tuple>

#include "info_nce.h"

namespace {

using simvae_fast::InfoNceCall;
using simvae_fast::InfoNceDtype;

InfoNceDtype dtype_of(const at::Tensor& z) {
  switch (z.scalar_type()) {
    case at::kFloat: return InfoNceDtype::kFloat32;
    case at::kDouble: return InfoNceDtype::kFloat64;
    case at::kHalf: return InfoNceDtype::kFloat16;
    case at::kBFloat16: return InfoNceDtype::kBFloat16;
    default: TORCH_CHECK(false, "info_nce: z must be float32, float64, float16 or bfloat16, got ", z.scalar_type());
  }
}

at::ScalarType accumulation_type(const at::Tensor& z) {
  return z.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

void check_inputs(const at::Tensor& z, const at::Tensor& temperature) {
  TORCH_CHECK(z.dim() == 3 && z.size(1) >= 2, "info_nce: z must be [G, J >= 2, D], got ", z.sizes());
  TORCH_CHECK(z.size(0) * z.size(1) < std::numeric_limits<int32_t>::max() / 2,
              "info_nce: z has too many rows for the CUDA kernels (G * J < 2^30), got ", z.sizes());
  TORCH_CHECK(temperature.dim() == 0 && temperature.device() == z.device(),
              "info_nce: temperature must be a 0-dim tensor on z's device");
  TORCH_CHECK(temperature.scalar_type() == accumulation_type(z),
              "info_nce: temperature must have the accumulation dtype of z");
}

at::Tensor acc_contiguous(const at::Tensor& t, const at::Tensor& z) {
  TORCH_CHECK(t.device() == z.device(), "info_nce: all tensors must be on z's device");
  return t.to(accumulation_type(z)).contiguous();
}

InfoNceCall make_call(const at::Tensor& zr, int64_t J, const at::Tensor& temperature, bool normalize,
                      bool positives_logsumexp) {
  const at::Context& context = at::globalContext();
  return {dtype_of(zr),       zr.data_ptr(),          zr.size(0) * zr.size(1),           zr.size(2),
          J,                  temperature.data_ptr(), normalize,                         positives_logsumexp,
          context.deterministicAlgorithms(),          context.allowTF32CuBLAS()};
}

// z as the kernels read it: contiguous, and float32 where a 16-bit z has no tensor-core path.
at::Tensor kernel_input(const at::Tensor& z) {
  const bool upcast = (z.scalar_type() == at::kHalf || z.scalar_type() == at::kBFloat16) &&
                      !simvae_fast::info_nce_on_tensor_cores(dtype_of(z), z.size(2), false);
  return upcast ? z.to(at::kFloat).contiguous() : z.contiguous();
}

at::Tensor workspace(const InfoNceCall& call, bool backward, const at::Tensor& z) {
  const int64_t bytes = static_cast<int64_t>(simvae_fast::info_nce_workspace_bytes(call, backward));
  return at::empty({bytes}, z.options().dtype(at::kByte));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> info_nce_forward_cuda(const at::Tensor& z, const at::Tensor& temperature,
                                                                      bool normalize, bool positives_logsumexp) {
  check_inputs(z, temperature);
  const c10::cuda::CUDAGuard guard(z.device());
  const int64_t N = z.size(0) * z.size(1), J = z.size(1);
  const auto acc = z.options().dtype(accumulation_type(z));
  if (N == 0 || z.size(2) == 0) {
    const double lse = N > 1 ? std::log(double(N - 1)) : 0.0, pos = positives_logsumexp ? std::log(double(J - 1)) : 0.0;
    return {at::full({N}, lse - pos, acc), at::full({N}, lse, acc), at::full({N}, pos, acc)};
  }
  const at::Tensor zr = kernel_input(z);
  const InfoNceCall call = make_call(zr, J, temperature, normalize, positives_logsumexp);
  at::Tensor ws = workspace(call, false, zr);
  at::Tensor loss = at::empty({N}, acc), lse = at::empty({N}, acc), pos = at::empty({N}, acc);
  C10_CUDA_CHECK(simvae_fast::info_nce_forward_cuda(call, ws.data_ptr(), loss.data_ptr(), lse.data_ptr(),
                                                    pos.data_ptr(), c10::cuda::getCurrentCUDAStream()));
  return {loss, lse, pos};
}

std::tuple<at::Tensor, at::Tensor> info_nce_backward_cuda(const at::Tensor& grad_loss, const at::Tensor& z,
                                                          const at::Tensor& temperature, const at::Tensor& lse,
                                                          const at::Tensor& pos, bool normalize,
                                                          bool positives_logsumexp) {
  check_inputs(z, temperature);
  const c10::cuda::CUDAGuard guard(z.device());
  const int64_t N = z.size(0) * z.size(1);
  if (N == 0 || z.size(2) == 0) return {at::zeros(z.sizes(), z.options()), at::zeros({}, temperature.options())};
  const at::Tensor zr = kernel_input(z);
  const at::Tensor w = acc_contiguous(grad_loss, z), lse_c = acc_contiguous(lse, z), pos_c = acc_contiguous(pos, z);
  const InfoNceCall call = make_call(zr, z.size(1), temperature, normalize, positives_logsumexp);
  at::Tensor ws = workspace(call, true, zr);
  at::Tensor grad_z = at::empty(z.sizes(), zr.options()), grad_temperature = at::empty({}, temperature.options());
  C10_CUDA_CHECK(simvae_fast::info_nce_backward_cuda(call, w.data_ptr(), lse_c.data_ptr(), pos_c.data_ptr(),
                                                     ws.data_ptr(), grad_z.data_ptr(), grad_temperature.data_ptr(),
                                                     c10::cuda::getCurrentCUDAStream()));
  return {grad_z.to(z.scalar_type()), grad_temperature};
}

}  // namespace

TORCH_LIBRARY_IMPL(simvae_fast, CUDA, m) {
  m.impl("info_nce_forward", &info_nce_forward_cuda);
  m.impl("info_nce_backward", &info_nce_backward_cuda);
}
