// CUDA registrations of simvae_fast::info_nce_forward / info_nce_backward (schemas in csrc/module.cpp): check the
// tensors (csrc/info_nce_op_checks.h), allocate outputs and one workspace (O(N D + N^2 / 64) bytes,
// info_nce_plan.h), and call the torch-free launchers of info_nce.cu on the current stream. The temperature stays
// on the device (no host sync). torch.use_deterministic_algorithms(True) selects the backward without atomics,
// and torch's TF32 switch for float32 matrix products (torch.backends.cuda.matmul.allow_tf32, or
// get_float32_matmul_precision() != "highest": at::globalContext().allowTF32CuBLAS()) lets float32 rows of up to
// 128 dims run on the TF32 tensor cores; otherwise float32 runs the exact FFMA kernels. Both are read per call;
// the op schema is unchanged. (These two switches are why this file is on the ATen API: csrc/module_cuda.cpp.)
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

#include "../info_nce_op_checks.h"
#include "info_nce.h"

namespace simvae {
namespace {

// The shared checks, and what the CUDA kernels add: fewer than 2^30 rows (int32 indices).
Dtype check_inputs(const at::Tensor& z, const at::Tensor& temperature) {
  const Dtype dtype = check_info_nce_inputs(z, temperature);
  STD_TORCH_CHECK(z.size(0) * z.size(1) < std::numeric_limits<int32_t>::max() / 2,
                  "z: expected fewer than 2^30 rows G * J for the CUDA kernels, got shape ", shape_string(z));
  return dtype;
}

at::Tensor acc_contiguous(const at::Tensor& t, Dtype dtype) {
  return t.to(accumulation_scalar_type(dtype)).contiguous();
}

InfoNceCall make_call(const at::Tensor& zr, int64_t J, const at::Tensor& temperature, bool normalize,
                      bool positives_logsumexp) {
  const at::Context& context = at::globalContext();
  return {dtype_of(zr.scalar_type(), "z"), zr.data_ptr(), zr.size(0) * zr.size(1), zr.size(2), J,
          temperature.data_ptr(), normalize, positives_logsumexp, context.deterministicAlgorithms(),
          context.allowTF32CuBLAS()};
}

// z as the kernels read it: contiguous, and float32 where a 16-bit z has no tensor-core path.
at::Tensor kernel_input(const at::Tensor& z, Dtype dtype) {
  const bool upcast = (dtype == Dtype::kFloat16 || dtype == Dtype::kBFloat16) &&
                      !info_nce_on_tensor_cores(dtype, z.size(2), false);
  return upcast ? z.to(at::kFloat).contiguous() : z.contiguous();
}

at::Tensor workspace(const InfoNceCall& call, bool backward, const at::Tensor& z) {
  const int64_t bytes = static_cast<int64_t>(info_nce_workspace_bytes(call, backward));
  return at::empty({bytes}, z.options().dtype(at::kByte));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> info_nce_forward_cuda_op(const at::Tensor& z,
                                                                         const at::Tensor& temperature,
                                                                         bool normalize, bool positives_logsumexp) {
  const Dtype dtype = check_inputs(z, temperature);
  const c10::cuda::CUDAGuard guard(z.device());
  const int64_t N = z.size(0) * z.size(1), J = z.size(1);
  const auto acc = z.options().dtype(accumulation_scalar_type(dtype));
  if (N == 0 || z.size(2) == 0) {
    const double lse = N > 1 ? std::log(double(N - 1)) : 0.0, pos = positives_logsumexp ? std::log(double(J - 1)) : 0.0;
    return {at::full({N}, lse - pos, acc), at::full({N}, lse, acc), at::full({N}, pos, acc)};
  }
  const at::Tensor zr = kernel_input(z, dtype);
  const InfoNceCall call = make_call(zr, J, temperature, normalize, positives_logsumexp);
  at::Tensor ws = workspace(call, false, zr);
  at::Tensor loss = at::empty({N}, acc), lse = at::empty({N}, acc), pos = at::empty({N}, acc);
  C10_CUDA_CHECK(info_nce_forward_cuda(call, ws.data_ptr(), loss.data_ptr(), lse.data_ptr(), pos.data_ptr(),
                                       c10::cuda::getCurrentCUDAStream()));
  return {loss, lse, pos};
}

std::tuple<at::Tensor, at::Tensor> info_nce_backward_cuda_op(const at::Tensor& grad_loss, const at::Tensor& z,
                                                             const at::Tensor& temperature, const at::Tensor& lse,
                                                             const at::Tensor& pos, bool normalize,
                                                             bool positives_logsumexp) {
  const Dtype dtype = check_inputs(z, temperature);
  check_info_nce_rows(z, grad_loss, lse, pos);
  const c10::cuda::CUDAGuard guard(z.device());
  const int64_t N = z.size(0) * z.size(1);
  if (N == 0 || z.size(2) == 0) return {at::zeros(z.sizes(), z.options()), at::zeros({}, temperature.options())};
  const at::Tensor zr = kernel_input(z, dtype);
  const at::Tensor w = acc_contiguous(grad_loss, dtype), lse_c = acc_contiguous(lse, dtype),
                   pos_c = acc_contiguous(pos, dtype);
  const InfoNceCall call = make_call(zr, z.size(1), temperature, normalize, positives_logsumexp);
  at::Tensor ws = workspace(call, true, zr);
  at::Tensor grad_z = at::empty(z.sizes(), zr.options()), grad_temperature = at::empty({}, temperature.options());
  C10_CUDA_CHECK(info_nce_backward_cuda(call, w.data_ptr(), lse_c.data_ptr(), pos_c.data_ptr(), ws.data_ptr(),
                                        grad_z.data_ptr(), grad_temperature.data_ptr(),
                                        c10::cuda::getCurrentCUDAStream()));
  return {grad_z.to(z.scalar_type()), grad_temperature};
}

}  // namespace
}  // namespace simvae

TORCH_LIBRARY_IMPL(simvae_fast, CUDA, m) {
  m.impl("info_nce_forward", &simvae::info_nce_forward_cuda_op);
  m.impl("info_nce_backward", &simvae::info_nce_backward_cuda_op);
}
