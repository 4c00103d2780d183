// The exact (CUDA-core) InfoNCE launchers of info_nce_exact.cu; info_nce.cu calls them for float64, for
// float32 without TF32, and for rows wider than the tensor-core kernels hold. Raw device pointers and a stream.
// z is a contiguous [N, D] matrix of `dtype`; every other buffer is of the accumulation type (double for
// kFloat64, float otherwise). temperature is a device scalar. Each returns cudaGetLastError().
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "info_nce.h"

namespace simvae {

// loss, lse, pos: [N]; inv_norm: [N] workspace.
cudaError_t info_nce_forward_exact(Dtype dtype, const void* z, int64_t N, int64_t D, int64_t J,
                                   const void* temperature, bool normalize, bool positives_logsumexp,
                                   void* inv_norm, void* loss, void* lse, void* pos, cudaStream_t stream);

// grad_loss, lse, pos: [N]; grad_z: [N, D] of `dtype`; grad_temperature: a device scalar.
// Workspaces: inv_norm [N], du [N, D], dscale_rows [N].
cudaError_t info_nce_backward_exact(Dtype dtype, const void* grad_loss, const void* z, int64_t N, int64_t D,
                                    int64_t J, const void* temperature, const void* lse, const void* pos,
                                    bool normalize, bool positives_logsumexp, void* inv_norm, void* du,
                                    void* dscale_rows, void* grad_z, void* grad_temperature, cudaStream_t stream);

}  // namespace simvae
