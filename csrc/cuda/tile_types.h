// Types shared by the two execution policies (exec_policy_device.cuh, exec_policy_host.h) and the tile code
// written over them (info_nce_tiles.cuh): a thread's (warp, lane) coordinates, the element formats the tensor
// cores read (bfloat16, float16; float32 as tf32), and the qualifiers that make one source compile for nvcc's
// device pass and for g++.
#pragma once
#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#define SIMVAE_HD __host__ __device__ __forceinline__  // plain helpers: launchers and kernels use them
#define SIMVAE_TILE __device__ __forceinline__         // policy-templated tile code: device only under nvcc
#define SIMVAE_UNROLL _Pragma("unroll")
#else
#define SIMVAE_HD inline
#define SIMVAE_TILE inline
#define SIMVAE_UNROLL
#endif

namespace simvae {
namespace tiles {

constexpr int kWarpsPerBlock = 4;  // every block of these kernels is 4 warps = 128 threads
constexpr int kThreadsPerBlock = 32 * kWarpsPerBlock;

struct Thread {
  int warp, lane;
  SIMVAE_HD int group() const { return lane >> 2; }  // "groupID" of the PTX fragment layouts
  SIMVAE_HD int quad() const { return lane & 3; }    // "threadID_in_group"
};

SIMVAE_HD float bits_to_float(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
SIMVAE_HD uint32_t float_to_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

// The operand formats. Each has: Bits, the storage of one element of z and dz in global memory; kBytes, its
// size (also its size in shared memory, where z is staged untouched); kF16 / kTf32, which mma the policy issues;
// to_float / store_bits, storage <-> fp32; stage(bits), the element as the tile kernels' copy of z holds it.
// bfloat16 and float16 (mma.m16n8k16): two elements per 32-bit operand register, the low half holding the one
// with the smaller column (PTX ISA, "Matrix fragments for mma.m16n8k16"); pack(lo, hi) rounds two floats.
struct Bf16 {
  using Bits = uint16_t;
  static constexpr int kBytes = 2;
  static constexpr bool kF16 = false, kTf32 = false;
  SIMVAE_HD static uint16_t stage(uint16_t h) { return h; }
  SIMVAE_HD static uint16_t store_bits(float f) { return uint16_t(pack(f, 0.0f) & 0xffffu); }
  SIMVAE_HD static float to_float(uint16_t h) { return bits_to_float(uint32_t(h) << 16); }
  SIMVAE_HD static uint32_t pack(float lo, float hi) {
#ifdef __CUDACC__
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    uint32_t u;
    memcpy(&u, &v, 4);
    return u;
#else
    return uint32_t(from_float(lo)) | (uint32_t(from_float(hi)) << 16);
#endif
  }
#ifndef __CUDACC__
  // g++ build: float -> bfloat16, round to nearest even (as cvt.rn.bf16x2.f32); NaN stays NaN.
  static uint16_t from_float(float f) {
    const uint32_t u = float_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);
    return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  }
#endif
};

struct F16 {
  using Bits = uint16_t;
  static constexpr int kBytes = 2;
  static constexpr bool kF16 = true, kTf32 = false;
  SIMVAE_HD static uint16_t stage(uint16_t h) { return h; }
  SIMVAE_HD static uint16_t store_bits(float f) { return uint16_t(pack(f, 0.0f) & 0xffffu); }
  SIMVAE_HD static float to_float(uint16_t h) {
#ifdef __CUDACC__
    return __half2float(__ushort_as_half(h));
#else
    _Float16 v;
    memcpy(&v, &h, 2);
    return float(v);
#endif
  }
  SIMVAE_HD static uint32_t pack(float lo, float hi) {
#ifdef __CUDACC__
    __half2 v = __floats2half2_rn(lo, hi);
    uint32_t u;
    memcpy(&u, &v, 4);
    return u;
#else
    return uint32_t(from_float(lo)) | (uint32_t(from_float(hi)) << 16);
#endif
  }
#ifndef __CUDACC__
  static uint16_t from_float(float f) {  // g++ build; round to nearest even, as cvt.rn.f16x2.f32
    const _Float16 v = static_cast<_Float16>(f);
    uint16_t h;
    memcpy(&h, &v, 2);
    return h;
  }
#endif
};

// float32 through the tensor cores (mma.m16n8k8 .tf32, fp32 accumulation): one element per 32-bit register,
// rounded to tf32 (8-bit exponent, 10-bit mantissa: relative error <= 2^-11) as cvt.rna.tf32.f32 does: to
// nearest, ties away from zero, the low 13 bits 0. The CUDA guide leaves mma on unrounded tf32 operands
// undefined, so every operand is rounded: z once, in the tile kernels' copy of it (stage), and the backward's
// Q c operands as they are formed (operand). Storage (z, dz) stays plain float32.
struct Tf32 {
  using Bits = uint32_t;
  static constexpr int kBytes = 4;
  static constexpr bool kF16 = false, kTf32 = true;
  static constexpr uint32_t kDropped = 0x1fffu;  // the mantissa bits tf32 does not have
  SIMVAE_HD static float to_float(uint32_t u) { return bits_to_float(u); }
  SIMVAE_HD static uint32_t store_bits(float f) { return float_to_bits(f); }
  SIMVAE_HD static uint32_t stage(uint32_t u) { return operand(bits_to_float(u)); }
  SIMVAE_HD static uint32_t operand(float f) {
#ifdef __CUDA_ARCH__
    uint32_t u;
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(u) : "f"(f));
    return u;
#else
    // Host: what ptxas (CUDA 13.0, sm_90) lowers the cvt to, read in the SASS of prep_rows_kernel<float>: add
    // half of the dropped part to the magnitude unless |f| >= inf or NaN (a carry into the exponent is the
    // correct rounding, up to inf), then clear the dropped bits (a NaN keeps its top payload bits).
    const uint32_t u = float_to_bits(f);
    const bool finite = (u & 0x7fffffffu) < 0x7f800000u;
    return (finite ? u + 0x1000u : u) & ~kDropped;
#endif
  }
};

// Element access for the row kernels: E's storage, fp32 arithmetic.
template <class E>
SIMVAE_HD float load_elem(const void* p, int64_t i) {
  return E::to_float(static_cast<const typename E::Bits*>(p)[i]);
}
template <class E>
SIMVAE_HD void store_elem(void* p, int64_t i, float v) {
  static_cast<typename E::Bits*>(p)[i] = E::store_bits(v);
}

// A partial log-sum-exp in base 2: the sum l of 2^(x - m) over some x, with m their maximum (-inf: empty).
struct alignas(8) MaxSum {
  float m, l;
};

struct alignas(8) Float2 {
  float x, y;
};

struct alignas(8) Bits2 {
  uint32_t x, y;
};

}  // namespace tiles
}  // namespace simvae
