// CUDA registrations of simvae_fast::info_nce_forward / info_nce_backward (schemas in csrc/info_nce_cpu.cpp):
// check the tensors, allocate outputs and workspaces (O(N D) at most), and call the torch-free launchers of
// info_nce.cu on the current stream. The temperature stays on the device (no host sync).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "info_nce.h"

namespace {

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
  TORCH_CHECK(temperature.dim() == 0 && temperature.device() == z.device(),
              "info_nce: temperature must be a 0-dim tensor on z's device");
  TORCH_CHECK(temperature.scalar_type() == accumulation_type(z),
              "info_nce: temperature must have the accumulation dtype of z");
}

at::Tensor acc_contiguous(const at::Tensor& t, const at::Tensor& z) {
  TORCH_CHECK(t.device() == z.device(), "info_nce: all tensors must be on z's device");
  return t.to(accumulation_type(z)).contiguous();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> info_nce_forward_cuda(const at::Tensor& z, const at::Tensor& temperature,
                                                                      bool normalize, bool positives_logsumexp) {
  check_inputs(z, temperature);
  const c10::cuda::CUDAGuard guard(z.device());
  const int64_t N = z.size(0) * z.size(1), D = z.size(2);
  const at::Tensor zr = z.contiguous();
  const auto acc = zr.options().dtype(accumulation_type(z));
  at::Tensor inv = at::empty({N}, acc), loss = at::empty({N}, acc), lse = at::empty({N}, acc),
             pos = at::empty({N}, acc);
  C10_CUDA_CHECK(simvae_fast::info_nce_forward_cuda(
      dtype_of(z), zr.data_ptr(), N, D, z.size(1), temperature.data_ptr(), normalize, positives_logsumexp,
      inv.data_ptr(), loss.data_ptr(), lse.data_ptr(), pos.data_ptr(), c10::cuda::getCurrentCUDAStream()));
  return {loss, lse, pos};
}

std::tuple<at::Tensor, at::Tensor> info_nce_backward_cuda(const at::Tensor& grad_loss, const at::Tensor& z,
                                                          const at::Tensor& temperature, const at::Tensor& lse,
                                                          const at::Tensor& pos, bool normalize,
                                                          bool positives_logsumexp) {
  check_inputs(z, temperature);
  const c10::cuda::CUDAGuard guard(z.device());
  const int64_t N = z.size(0) * z.size(1), D = z.size(2);
  const at::Tensor zr = z.contiguous();
  const at::Tensor w = acc_contiguous(grad_loss, z), lse_c = acc_contiguous(lse, z), pos_c = acc_contiguous(pos, z);
  const auto acc = zr.options().dtype(accumulation_type(z));
  at::Tensor inv = at::empty({N}, acc), du = at::empty({N, D}, acc), dscale_rows = at::empty({N}, acc);
  at::Tensor grad_z = at::empty(z.sizes(), zr.options()), grad_temperature = at::empty({}, acc);
  C10_CUDA_CHECK(simvae_fast::info_nce_backward_cuda(
      dtype_of(z), w.data_ptr(), zr.data_ptr(), N, D, z.size(1), temperature.data_ptr(), lse_c.data_ptr(),
      pos_c.data_ptr(), normalize, positives_logsumexp, inv.data_ptr(), du.data_ptr(), dscale_rows.data_ptr(),
      grad_z.data_ptr(), grad_temperature.data_ptr(), c10::cuda::getCurrentCUDAStream()));
  return {grad_z, grad_temperature};
}

}  // namespace

TORCH_LIBRARY_IMPL(simvae_fast, CUDA, m) {
  m.impl("info_nce_forward", &info_nce_forward_cuda);
  m.impl("info_nce_backward", &info_nce_backward_cuda);
}
