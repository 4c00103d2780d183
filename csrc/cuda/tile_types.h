// Types shared by the two execution policies (exec_policy_device.cuh, exec_policy_host.h) and the tile code
// written over them (info_nce_tiles.cuh): a thread's (warp, lane) coordinates, the 16-bit element formats the
// tensor cores read, and the qualifiers that make one source compile for nvcc's device pass and for g++.
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

namespace simvae_fast {
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

// bfloat16 and float16 as the mma.sync operand formats: the low half of a packed 32-bit register holds the
// element with the smaller column (PTX ISA, "Matrix fragments for mma.m16n8k16").
struct Bf16 {
  static constexpr bool kF16 = false;
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
  static constexpr bool kF16 = true;
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

// Element access for the row kernels: 16-bit storage, fp32 arithmetic.
template <class E>
SIMVAE_HD float load_elem(const void* p, int64_t i) {
  return E::to_float(static_cast<const uint16_t*>(p)[i]);
}
template <class E>
SIMVAE_HD void store_elem(void* p, int64_t i, float v) {
  static_cast<uint16_t*>(p)[i] = uint16_t(E::pack(v, 0.0f) & 0xffffu);
}

// A partial log-sum-exp in base 2: the sum l of 2^(x - m) over some x, with m their maximum (-inf: empty).
struct alignas(8) MaxSum {
  float m, l;
};

struct alignas(8) Float2 {
  float x, y;
};

}  // namespace tiles
}  // namespace simvae_fast
