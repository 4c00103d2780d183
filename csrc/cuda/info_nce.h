// Torch-free launchers of the InfoNCE CUDA kernels (info_nce.cu): raw device pointers and a stream.
// z is a contiguous [N, D] matrix (N = G*J rows, J views per group) of `dtype`; loss, lse, pos, grad_loss and
// the temperature (a device scalar: no host sync) are of the accumulation type (double for kFloat64, float
// otherwise); grad_z is like z. The caller allocates `workspace` of info_nce_workspace_bytes(...) for the same
// arguments (it depends on the current device's SM count). N = 0 and D = 0 are the caller's (nothing here
// launches an empty grid; the launchers return cudaErrorInvalidValue for them).
// Paths: bfloat16 / float16 with D <= 256, and float32 with D <= 128 when `tf32` (the caller's TF32 switch), run
// on the tensor cores (info_nce_tiles.cuh); float64 and other float32 calls on the exact CUDA-core kernels
// (info_nce_exact.cu), which take no 16-bit z: wider half-precision rows are the caller's to upcast.
// `deterministic` selects the backward without atomics. Each returns the first CUDA error.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "../dtype.h"

namespace simvae {

struct InfoNceCall {
  Dtype dtype;
  const void* z;
  int64_t N, D, J;
  const void* temperature;
  bool normalize, positives_logsumexp, deterministic;
  bool tf32;  // float32 may run on the tensor cores with operands rounded to tf32
};

// Whether a call of this dtype and row width (and TF32 switch) runs on the tensor cores (else: the exact kernels,
// float32 / float64 only).
bool info_nce_on_tensor_cores(Dtype dtype, int64_t D, bool tf32);

size_t info_nce_workspace_bytes(const InfoNceCall& call, bool backward);

// loss, lse, pos: [N].
cudaError_t info_nce_forward_cuda(const InfoNceCall& call, void* workspace, void* loss, void* lse, void* pos,
                                  cudaStream_t stream);

// grad_loss, lse, pos: [N]; grad_z: [N, D]; grad_temperature: a device scalar.
cudaError_t info_nce_backward_cuda(const InfoNceCall& call, const void* grad_loss, const void* lse,
                                   const void* pos, void* workspace, void* grad_z, void* grad_temperature,
                                   cudaStream_t stream);

}  // namespace simvae
