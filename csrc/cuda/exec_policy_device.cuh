// The device execution policy of the tile code (info_nce_tiles.cuh): each thread runs its own lane, warp code
// runs on every warp at once, and the collectives are the sm_80+ instructions themselves (inline PTX:
// ldmatrix, mma.sync, cp.async; shuffles and atomics through the CUDA intrinsics). Its host twin,
// exec_policy_host.h, has the same members and emulates them; the tile code sees only this interface:
//   PerThread<T>          a per-thread value (a register array here; [warps][32] copies on the host)
//   each_warp(f)          f(warp): warp-uniform code (no barrier inside)
//   each_lane(warp, f)    f(Thread): one thread's scalar code
//   barrier()             __syncthreads: the end of a phase
//   lds/sts               32/64-bit shared-memory access at a byte offset of the dynamic shared memory
//   cp_async16 / cp_async_commit / cp_async_wait_all      16-byte global->shared copies, zero-filled if !valid
//   ldmatrix_x4(warp, trans, out, address)                 four 8x8 b16 matrices (PTX ldmatrix .x4)
//   mma<E>(warp, d, a, b)                                  d += a b, fp32 accumulators: mma.m16n8k16 for
//                                                          E = Bf16 / F16, mma.m16n8k8 .tf32 for E = Tf32
//   shfl_xor(warp, src, dst, mask)                         dst(t) = src(t ^ mask)
//   red_add2, atomic_max_nonnegative, exp2                 global fp32 atomics; ex2.approx
// Operands of the collectives are accessors (Thread -> value or pointer) so that the host can gather the 32
// lanes of a warp; here each thread passes its own.
#pragma once
#include <cuda_runtime.h>

#include "tile_types.h"

namespace simvae {
namespace tiles {

struct DevicePolicy {
  template <class T>
  struct PerThread {
    T v;
    __device__ __forceinline__ T& operator[](Thread) { return v; }
    __device__ __forceinline__ const T& operator[](Thread) const { return v; }
  };

  __device__ __forceinline__ static Thread self() { return Thread{int(threadIdx.x >> 5), int(threadIdx.x & 31)}; }

  template <class F>
  __device__ __forceinline__ static void each_warp(F&& f) {
    f(int(threadIdx.x >> 5));
  }
  template <class F>
  __device__ __forceinline__ static void each_lane(int warp, F&& f) {
    f(Thread{warp, int(threadIdx.x & 31)});
  }
  __device__ __forceinline__ static void barrier() { __syncthreads(); }

  __device__ __forceinline__ static unsigned char* smem() {
    extern __shared__ __align__(16) unsigned char simvae_dynamic_smem[];
    return simvae_dynamic_smem;
  }
  __device__ __forceinline__ static uint32_t smem_address(uint32_t offset) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(smem())) + offset;
  }
  template <class T>
  __device__ __forceinline__ static T lds(Thread, uint32_t offset) {
    return *reinterpret_cast<const T*>(smem() + offset);
  }
  template <class T>
  __device__ __forceinline__ static void sts(Thread, uint32_t offset, T value) {
    *reinterpret_cast<T*>(smem() + offset) = value;
  }

  __device__ __forceinline__ static void cp_async16(Thread, uint32_t offset, const void* src, bool valid) {
    const int bytes = valid ? 16 : 0;  // src-size 0: the 16 bytes are zero-filled, nothing is read
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_address(offset)), "l"(src),
                 "r"(bytes));
  }
  __device__ __forceinline__ static void cp_async_commit(Thread) { asm volatile("cp.async.commit_group;\n" ::); }
  __device__ __forceinline__ static void cp_async_wait_all(Thread) {
    asm volatile("cp.async.wait_group 0;\n" ::: "memory");
  }

  template <class Out, class Address>
  __device__ __forceinline__ static void ldmatrix_x4(int, bool trans, Out out, Address address) {
    const Thread t = self();
    uint32_t* r = out(t);
    const uint32_t a = smem_address(address(t));
    if (trans)
      asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                   : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                   : "r"(a));
    else
      asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                   : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                   : "r"(a));
  }

  template <class E, class D, class A, class B>
  __device__ __forceinline__ static void mma(int, D d_of, A a_of, B b_of) {
    const Thread t = self();
    float* d = d_of(t);
    const uint32_t* a = a_of(t);
    const uint32_t* b = b_of(t);
    if (E::kTf32)
      asm(
          "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
          "{%0, %1, %2, %3};\n"
          : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
          : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    else if (E::kF16)
      asm(
          "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
          "{%0, %1, %2, %3};\n"
          : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
          : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    else
      asm(
          "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
          "{%0, %1, %2, %3};\n"
          : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
          : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }

  template <class Src, class Dst>
  __device__ __forceinline__ static void shfl_xor(int, Src src, Dst dst, int mask) {
    const Thread t = self();
    dst(t) = __shfl_xor_sync(0xffffffffu, src(t), mask);
  }

  __device__ __forceinline__ static void red_add2(float* p, float a, float b) {
    atomicAdd(reinterpret_cast<float2*>(p), make_float2(a, b));  // sm_90: one vector reduction, no return
  }
  // max over non-negative floats (their bit patterns order like unsigned integers; NaN wins).
  __device__ __forceinline__ static void atomic_max_nonnegative(float* p, float v) {
    atomicMax(reinterpret_cast<unsigned int*>(p), __float_as_uint(v));
  }
  __device__ __forceinline__ static float exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
  }
};

}  // namespace tiles
}  // namespace simvae
