// Philox4x32-10 for 8 consecutive counters at once on AVX2: the same bits as philox.h's philox_first_two
// (Triton's tl.randint4x), and Triton's uint_to_uniform_float on 8 lanes. Host C++ for x86-64 with gcc or
// clang; the functions carry target("avx2"), so a caller compiled for baseline x86-64 must dispatch at run
// time (csrc/latent_cpu.cpp does, with gcc's function multiversioning) and never call them on a CPU without it.
//
// Derivation. A round needs the full 32×32→64-bit products B·c2 and A·c0 of every lane. AVX2 has no such
// 8-lane product: vpmuludq (_mm256_mul_epu32) multiplies the low 32 bits of each 64-bit lane, giving 4 full
// 64-bit products. So the 8 counters n, n+1, …, n+7 are kept for all 10 rounds as two 4-lane streams, one
// per 64-bit-lane parity: "even" holds counters n, n+2, n+4, n+6 and "odd" n+1, n+3, n+5, n+7, each Philox
// word in the low 32 bits of a 64-bit lane. Per stream and round:
//   pb = mul_epu32(c2, B), pa = mul_epu32(c0, A)       (exact 64-bit products of the low halves)
//   c0' = (pb >> 32) ^ c1 ^ k0,   c1' = pb,   c2' = (pa >> 32) ^ c3 ^ k1,   c3' = pa
// The high halves of c1' and c3' hold the products' high words, and xors carry them into c0', c2'; that is
// harmless: mul_epu32 reads only low halves, pb >> 32 and pa >> 32 have clean (zero) high halves, and only
// low halves are read out. Per 8 counters and round: 4 vpmuludq, 4 shifts, 8 xors, no shuffle. At the end
// the low halves are interleaved back into counter order with one shift and one blend per output word:
//   out = blend_epi32(even, odd << 32, 0b10101010)   (dword 2m from even lane m, dword 2m+1 from odd lane m).
// The counter is 64-bit: c0 = its low word, c1 = its high word, so each stream's counters are built as
// 64-bit sums (n + {0, 2, 4, 6} or n + {1, 3, 5, 7}) and c1 = sum >> 32 carries correctly across 2^32.
// Keys: k0 = seed low word + r·KEY_A, k1 = seed high word + r·KEY_B (mod 2^32) for round r, broadcast once
// per call into a PhiloxKeys schedule.
// Uniforms (Triton's uint_to_uniform_float): x as int32 folded by x < 0 ? ~x : x, i.e. x ^ (x >> 31) with
// an arithmetic shift, converted to float (vcvtdq2ps, round to nearest as static_cast) and multiplied by
// 4.6566127342e-10f: the same two roundings as the scalar code, so the same bits.
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace simvae {

#define SIMVAE_AVX2 inline __attribute__((always_inline, target("avx2")))

struct PhiloxKeys {
  __m256i k0[10], k1[10];  // the round keys, broadcast (32-bit values in the low half of each 64-bit lane)
};

SIMVAE_AVX2 PhiloxKeys philox_keys(uint64_t seed) {
  PhiloxKeys keys;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    keys.k0[round] = _mm256_set1_epi64x(k0);
    keys.k1[round] = _mm256_set1_epi64x(k1);
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return keys;
}

// The first two Philox outputs of the 4 counters in `counters` (64-bit lanes), in the low halves.
SIMVAE_AVX2 void philox_first_two_x4(const PhiloxKeys& keys, __m256i counters, __m256i& out0, __m256i& out1) {
  const __m256i round_a = _mm256_set1_epi64x(0xD2511F53u), round_b = _mm256_set1_epi64x(0xCD9E8D57u);
  __m256i c0 = counters, c1 = _mm256_srli_epi64(counters, 32);
  __m256i c2 = _mm256_setzero_si256(), c3 = _mm256_setzero_si256();
  for (int round = 0; round < 10; ++round) {
    const __m256i product_b = _mm256_mul_epu32(c2, round_b);
    const __m256i product_a = _mm256_mul_epu32(c0, round_a);
    c0 = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(product_b, 32), c1), keys.k0[round]);
    c1 = product_b;
    c2 = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(product_a, 32), c3), keys.k1[round]);
    c3 = product_a;
  }
  out0 = c0;
  out1 = c1;
}

// Low halves of the even-stream and odd-stream lanes back in counter order: 8 × uint32.
SIMVAE_AVX2 __m256i interleave_low_halves(__m256i even, __m256i odd) {
  return _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}

// Triton's uint_to_uniform_float on 8 lanes.
SIMVAE_AVX2 __m256 uint32_to_uniform_x8(__m256i bits) {
  const __m256i folded = _mm256_xor_si256(bits, _mm256_srai_epi32(bits, 31));
  return _mm256_mul_ps(_mm256_cvtepi32_ps(folded), _mm256_set1_ps(4.6566127342e-10f));
}

// Uniforms u1 = uniform(out0), u2 = uniform(out1) of Philox for counters counter0 … counter0 + 7.
SIMVAE_AVX2 void philox_uniforms_x8(const PhiloxKeys& keys, uint64_t counter0, __m256& u1, __m256& u2) {
  const __m256i base = _mm256_set1_epi64x(static_cast<int64_t>(counter0));
  __m256i even0, even1, odd0, odd1;
  philox_first_two_x4(keys, _mm256_add_epi64(base, _mm256_setr_epi64x(0, 2, 4, 6)), even0, even1);
  philox_first_two_x4(keys, _mm256_add_epi64(base, _mm256_setr_epi64x(1, 3, 5, 7)), odd0, odd1);
  u1 = uint32_to_uniform_x8(interleave_low_halves(even0, odd0));
  u2 = uint32_to_uniform_x8(interleave_low_halves(even1, odd1));
}

#undef SIMVAE_AVX2

}  // namespace simvae
