// Counter-based uniforms equal, bit for bit, to Triton's tl.randint4x / uint_to_uniform_float, so that
// C++ CPU, CUDA and Triton make the same noise for the same (seed, counter). Compiles as host C++ and as
// CUDA device code. Box-Muller (log, sqrt, cos) is left to the caller, which picks its own math functions.
//
// Triton (triton/language/random.py): Philox4x32 with 10 rounds on the counter (c0, c1, c2, c3) =
// (counter low 32 bits, counter high 32 bits, 0, 0) and key (k0, k1) = (seed low, seed high); each round
//   c0' = mulhi(B, c2) ^ c1 ^ k0,  c1' = B * c2,  c2' = mulhi(A, c0) ^ c3 ^ k1,  c3' = A * c0,
//   k0 += KEY_A, k1 += KEY_B   (all mod 2^32).
// tl.randn uses the first two outputs: u = int32(x) folded by x < 0 ? ~x : x, times 4.6566127342e-10f,
// u1 = max(u1, 1e-7), n = sqrt(-2 log u1) * cos(6.283185307179586f * u2).
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define SIMVAE_HOST_DEVICE __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define SIMVAE_HOST_DEVICE inline __attribute__((always_inline))  // inlines into target_clones copies too
#else
#define SIMVAE_HOST_DEVICE inline
#endif

namespace simvae {

constexpr float kTwoPiF = 6.283185307179586f;
constexpr float kMinUniform = 1.0e-7f;

// The first two Philox4x32-10 outputs for `counter` under `seed` (the two tl.randn consumes).
SIMVAE_HOST_DEVICE void philox_first_two(uint64_t seed, uint64_t counter, uint32_t& out0, uint32_t& out1) {
  constexpr uint32_t kKeyA = 0x9E3779B9u, kKeyB = 0xBB67AE85u;
  constexpr uint32_t kRoundA = 0xD2511F53u, kRoundB = 0xCD9E8D57u;
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32), c2 = 0u, c3 = 0u;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
#if defined(__CUDACC__)
#pragma unroll
#elif defined(__GNUC__)
#pragma GCC unroll 10  // fully unrolled, so that a loop over counters around this call vectorises
#endif
  for (int round = 0; round < 10; ++round) {
    const uint64_t product_b = static_cast<uint64_t>(kRoundB) * c2;
    const uint64_t product_a = static_cast<uint64_t>(kRoundA) * c0;
    c0 = static_cast<uint32_t>(product_b >> 32) ^ c1 ^ k0;
    c1 = static_cast<uint32_t>(product_b);
    c2 = static_cast<uint32_t>(product_a >> 32) ^ c3 ^ k1;
    c3 = static_cast<uint32_t>(product_a);
    k0 += kKeyA;
    k1 += kKeyB;
  }
  out0 = c0;
  out1 = c1;
}

// Triton's uint_to_uniform_float for 32-bit values: a float in [0, 1).
SIMVAE_HOST_DEVICE float uint32_to_uniform(uint32_t bits) {
  const int32_t signed_bits = static_cast<int32_t>(bits);
  const int32_t folded = signed_bits < 0 ? ~signed_bits : signed_bits;
  return static_cast<float>(folded) * 4.6566127342e-10f;
}

}  // namespace simvae
