// InfoNCE / NT-Xent CUDA launchers (docs/math.md §4). bfloat16 and float16 rows of up to 256 dims, and float32 rows
// of up to 128 when the call allows TF32 (torch's allowTF32CuBLAS, read by info_nce_cuda.cpp), run on the tensor
// cores: the kernels below are thin __global__ wrappers of the block bodies in info_nce_tiles.cuh (tiles,
// mma.sync: m16n8k16 bf16/fp16, m16n8k8 tf32) and info_nce_rows.cuh (per-row parts), run with the device
// execution policy; their schedule and workspace come from info_nce_plan.h. Everything else (float64, float32
// without TF32 or wider than 128) goes to the exact CUDA-core kernels (info_nce_exact.cu).
// Torch-free: compile-checked with plain nvcc. Cost model and predicted H200 time: info_nce_tiles.cuh's header.
//
// Launches, forward:  memset(maxima) | prep_rows | forward tiles | forward_rows
//           backward: memset(maxima, du when atomic) | prep_rows | backward tiles | backward_rows | dscale_sum
// The tile kernels use 128 threads and are built for 2 resident blocks per SM (__launch_bounds__(128, 2):
// <= 255 registers; dynamic shared memory TileSmem<...>::kBytes, 22 KB (bf16, 32 dims) .. 110 KB (bf16, 256)).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "exec_policy_device.cuh"
#include "info_nce.h"
#include "info_nce_exact.h"
#include "info_nce_plan.h"
#include "info_nce_rows.cuh"
#include "info_nce_tiles.cuh"

namespace simvae {
namespace {

using tiles::Bf16;
using tiles::DevicePolicy;
using tiles::F16;
using tiles::Tf32;
using tiles::kThreadsPerBlock;
using tiles::kWarpsPerBlock;
using tiles::Plan;

// The kernels are templated on the CUDA element type (so that their names say bfloat16 / half / float); the tile
// code on its operand format.
template <class T>
struct Operand;
template <>
struct Operand<__nv_bfloat16> {
  using type = Bf16;
};
template <>
struct Operand<__half> {
  using type = F16;
};
template <>
struct Operand<float> {
  using type = Tf32;
};
template <class T>
using OperandOf = typename Operand<T>::type;

template <class T>
__global__ void __launch_bounds__(kThreadsPerBlock) prep_rows_kernel(tiles::PrepArgs a) {
  tiles::prep_rows<DevicePolicy, OperandOf<T>>(a, blockIdx.x);
}
template <class T, int kDims>
__global__ void __launch_bounds__(kThreadsPerBlock, 2) forward_tiles_kernel(tiles::ForwardTileArgs a) {
  tiles::forward_block<DevicePolicy, OperandOf<T>, kDims>(a, blockIdx.x);
}
template <class T>
__global__ void __launch_bounds__(kThreadsPerBlock) forward_rows_kernel(tiles::ForwardRowArgs a) {
  tiles::forward_rows<DevicePolicy, OperandOf<T>>(a, blockIdx.x);
}
template <class T, int kDims, bool kSymmetric>
__global__ void __launch_bounds__(kThreadsPerBlock, 2) backward_tiles_kernel(tiles::BackwardTileArgs a) {
  tiles::backward_block<DevicePolicy, OperandOf<T>, kDims, kSymmetric>(a, blockIdx.x);
}
template <class T>
__global__ void __launch_bounds__(kThreadsPerBlock) backward_rows_kernel(tiles::BackwardRowArgs a) {
  tiles::backward_rows<DevicePolicy, OperandOf<T>>(a, blockIdx.x);
}
__global__ void __launch_bounds__(kThreadsPerBlock) dscale_sum_kernel(const float* ds_part, int64_t parts,
                                                                     const float* dscale_rows, int64_t N,
                                                                     const float* temperature, float* grad) {
  tiles::dscale_sum<DevicePolicy>(ds_part, parts, dscale_rows, N, temperature, grad);
}

bool on_tensor_cores(const InfoNceCall& c) { return info_nce_on_tensor_cores(c.dtype, c.D, c.tf32); }

// Four tile blocks per SM: two resident at a time, and a second wave to even out the runs' lengths.
int target_blocks() {
  int device = 0, sms = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || sms <= 0)
    sms = 132;
  return 4 * sms;
}

Plan plan_of(const InfoNceCall& c, bool backward) {
  const bool aligned = reinterpret_cast<uintptr_t>(c.z) % 16 == 0;
  if (c.dtype == Dtype::kFloat32)
    return tiles::make_plan<Tf32>(c.N, c.D, aligned, backward, c.deterministic, target_blocks());
  return tiles::make_plan<Bf16>(c.N, c.D, aligned, backward, c.deterministic, target_blocks());  // = F16's
}

size_t acc_bytes(const InfoNceCall& c) { return c.dtype == Dtype::kFloat64 ? 8 : 4; }
size_t aligned_size(size_t bytes) { return (bytes + 255) / 256 * 256; }

unsigned row_grid(int64_t N) { return unsigned((N + kWarpsPerBlock - 1) / kWarpsPerBlock); }

template <class Kernel>
cudaError_t allow_smem(Kernel kernel, uint32_t bytes) {
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
}

struct Views {  // the plan's workspace pieces
  float *inv, *maxima;
  void* zp;
  tiles::TileProblem tiles;
  tiles::RowProblem rows;
};

Views views_of(const InfoNceCall& c, const Plan& plan, void* workspace) {
  char* ws = static_cast<char*>(workspace);
  Views v{};
  v.inv = reinterpret_cast<float*>(ws + plan.inv);
  v.maxima = reinterpret_cast<float*>(ws + plan.maxima);
  v.zp = plan.copy ? ws + plan.zp : nullptr;
  const float* temperature = static_cast<const float*>(c.temperature);
  v.tiles = {plan.copy ? v.zp : c.z, plan.copy ? plan.pitch : c.D, int(c.N), plan.sweep, temperature, v.inv};
  v.rows = {c.z, c.N, c.D, c.J, temperature, v.inv, c.normalize, c.positives_logsumexp};
  return v;
}

template <class T, int kDims>
cudaError_t forward_tensor_cores(const InfoNceCall& c, const Plan& plan, void* workspace, float* loss, float* lse,
                                 float* pos, cudaStream_t stream) {
  using L = tiles::TileSmem<OperandOf<T>, kDims, false>;
  const Views v = views_of(c, plan, workspace);
  char* ws = static_cast<char*>(workspace);
  cudaError_t err = cudaMemsetAsync(v.maxima, 0, 8, stream);
  if (err != cudaSuccess) return err;
  prep_rows_kernel<T><<<row_grid(c.N), kThreadsPerBlock, 0, stream>>>(
      tiles::PrepArgs{v.rows, nullptr, v.inv, v.maxima, v.zp, plan.pitch});
  const tiles::ForwardTileArgs fa{v.tiles, reinterpret_cast<tiles::MaxSum*>(ws + plan.row_part),
                                  reinterpret_cast<tiles::MaxSum*>(ws + plan.col_part)};
  if ((err = allow_smem(forward_tiles_kernel<T, kDims>, L::kBytes)) != cudaSuccess) return err;
  forward_tiles_kernel<T, kDims><<<plan.sweep.blocks(), kThreadsPerBlock, L::kBytes, stream>>>(fa);
  forward_rows_kernel<T><<<row_grid(c.N), kThreadsPerBlock, 0, stream>>>(
      tiles::ForwardRowArgs{v.rows, plan.sweep, fa.row_part, fa.col_part, lse, pos, loss});
  return cudaGetLastError();
}

template <class T, int kDims>
cudaError_t backward_tensor_cores(const InfoNceCall& c, const Plan& plan, const float* w, const float* lse,
                                  const float* pos, void* workspace, void* grad_z, float* grad_temperature,
                                  cudaStream_t stream) {
  using LSym = tiles::TileSmem<OperandOf<T>, kDims, true>;
  using LFull = tiles::TileSmem<OperandOf<T>, kDims, false>;
  const Views v = views_of(c, plan, workspace);
  char* ws = static_cast<char*>(workspace);
  float* du = reinterpret_cast<float*>(ws + plan.du);
  float* ds_part = reinterpret_cast<float*>(ws + plan.ds_part);
  float* dscale_rows = reinterpret_cast<float*>(ws + plan.dscale_rows);
  cudaError_t err = cudaMemsetAsync(v.maxima, 0, 8, stream);
  if (err == cudaSuccess && plan.sweep.symmetric)
    err = cudaMemsetAsync(du, 0, sizeof(float) * plan.rows() * plan.dims, stream);
  if (err != cudaSuccess) return err;
  prep_rows_kernel<T><<<row_grid(c.N), kThreadsPerBlock, 0, stream>>>(
      tiles::PrepArgs{v.rows, w, v.inv, v.maxima, v.zp, plan.pitch});
  const tiles::BackwardTileArgs ba{v.tiles, lse, w, v.maxima, du, ds_part};
  if (plan.sweep.symmetric) {
    if ((err = allow_smem(backward_tiles_kernel<T, kDims, true>, LSym::kBytes)) != cudaSuccess) return err;
    backward_tiles_kernel<T, kDims, true><<<plan.sweep.blocks(), kThreadsPerBlock, LSym::kBytes, stream>>>(ba);
  } else {
    if ((err = allow_smem(backward_tiles_kernel<T, kDims, false>, LFull::kBytes)) != cudaSuccess) return err;
    backward_tiles_kernel<T, kDims, false><<<plan.sweep.blocks(), kThreadsPerBlock, LFull::kBytes, stream>>>(ba);
  }
  backward_rows_kernel<T><<<row_grid(c.N), kThreadsPerBlock, 0, stream>>>(tiles::BackwardRowArgs{
      v.rows, w, pos, v.maxima, du, plan.du_parts(), plan.dims, plan.rows(), dscale_rows, grad_z});
  dscale_sum_kernel<<<1, kThreadsPerBlock, 16, stream>>>(ds_part, plan.sweep.blocks(), dscale_rows, c.N,
                                                         v.rows.temperature, grad_temperature);
  return cudaGetLastError();
}

// Calls F<T, dims>::run(args...) for the call's element type and the plan's padded width.
template <template <class, int> class F, class T, class... Args>
cudaError_t dispatch_dims(const InfoNceCall& c, const Plan& plan, Args... args) {
  switch (plan.dims) {
    case 32: return F<T, 32>::run(c, plan, args...);
    case 64: return F<T, 64>::run(c, plan, args...);
    case 128: return F<T, 128>::run(c, plan, args...);
    case 256:
      if constexpr (tiles::max_dims<OperandOf<T>>() >= 256) return F<T, 256>::run(c, plan, args...);
      return cudaErrorInvalidValue;
    default: return cudaErrorInvalidValue;
  }
}
template <template <class, int> class F, class... Args>
cudaError_t dispatch(const InfoNceCall& c, const Plan& plan, Args... args) {
  switch (c.dtype) {
    case Dtype::kBFloat16: return dispatch_dims<F, __nv_bfloat16>(c, plan, args...);
    case Dtype::kFloat16: return dispatch_dims<F, __half>(c, plan, args...);
    case Dtype::kFloat32: return dispatch_dims<F, float>(c, plan, args...);
    default: return cudaErrorInvalidValue;
  }
}
template <class T, int kDims>
struct Forward {
  template <class... Args>
  static cudaError_t run(Args... args) { return forward_tensor_cores<T, kDims>(args...); }
};
template <class T, int kDims>
struct Backward {
  template <class... Args>
  static cudaError_t run(Args... args) { return backward_tensor_cores<T, kDims>(args...); }
};

// The exact path's workspace: inv_norm [N], then (backward) du [N, D] and dscale_rows [N], accumulation type.
size_t exact_workspace(const InfoNceCall& c, bool backward) {
  const size_t a = acc_bytes(c);
  return aligned_size(a * c.N) + (backward ? aligned_size(a * c.N * c.D) + aligned_size(a * c.N) : 0);
}

}  // namespace

bool info_nce_on_tensor_cores(Dtype dtype, int64_t D, bool tf32) {
  if (dtype == Dtype::kFloat32) return tf32 && tiles::tile_dims<Tf32>(D) != 0;
  return (dtype == Dtype::kBFloat16 || dtype == Dtype::kFloat16) && tiles::tile_dims<Bf16>(D) != 0;
}

size_t info_nce_workspace_bytes(const InfoNceCall& c, bool backward) {
  return on_tensor_cores(c) ? plan_of(c, backward).bytes : exact_workspace(c, backward);
}

cudaError_t info_nce_forward_cuda(const InfoNceCall& c, void* workspace, void* loss, void* lse, void* pos,
                                  cudaStream_t stream) {
  if (c.N <= 0 || c.D <= 0) return cudaErrorInvalidValue;
  if (!on_tensor_cores(c))
    return info_nce_forward_exact(c.dtype, c.z, c.N, c.D, c.J, c.temperature, c.normalize, c.positives_logsumexp,
                                  workspace, loss, lse, pos, stream);
  return dispatch<Forward>(c, plan_of(c, false), workspace, static_cast<float*>(loss), static_cast<float*>(lse),
                           static_cast<float*>(pos), stream);
}

cudaError_t info_nce_backward_cuda(const InfoNceCall& c, const void* grad_loss, const void* lse, const void* pos,
                                   void* workspace, void* grad_z, void* grad_temperature, cudaStream_t stream) {
  if (c.N <= 0 || c.D <= 0) return cudaErrorInvalidValue;
  if (!on_tensor_cores(c)) {
    char* ws = static_cast<char*>(workspace);
    const size_t a = acc_bytes(c), du = aligned_size(a * c.N), dscale = du + aligned_size(a * c.N * c.D);
    return info_nce_backward_exact(c.dtype, grad_loss, c.z, c.N, c.D, c.J, c.temperature, lse, pos, c.normalize,
                                   c.positives_logsumexp, ws, ws + du, ws + dscale, grad_z, grad_temperature,
                                   stream);
  }
  return dispatch<Backward>(c, plan_of(c, true), static_cast<const float*>(grad_loss),
                            static_cast<const float*>(lse), static_cast<const float*>(pos), workspace, grad_z,
                            static_cast<float*>(grad_temperature), stream);
}

}  // namespace simvae
