// Philox4x32-10 for blocks of 8 consecutive counters on AVX2: the same bits as philox.h's philox_first_two
// (Triton's tl.randint4x), and Triton's uint_to_uniform_float on 8 lanes. Host C++ for x86-64 with gcc or
// clang; the functions carry target("avx2"), so a caller compiled for baseline x86-64 must dispatch at run
// time (csrc/latent_cpu.cpp does, with gcc's function multiversioning) and never call them on a CPU without it.
//
// Derivation. A round needs the full 32×32→64-bit products B·c2 and A·c0 of every lane. AVX2 has no such
// 8-lane product: vpmuludq (_mm256_mul_epu32) multiplies the low 32 bits of each 64-bit lane, giving 4 full
// 64-bit products. So the 8 counters n, n+1, …, n+7 are kept for all 10 rounds as two 4-lane streams, one
// per 64-bit-lane parity: "even" holds counters n, n+2, n+4, n+6 and "odd" n+1, n+3, n+5, n+7, each Philox
// word in the low 32 bits of a 64-bit lane (several blocks' streams run interleaved, see below). Per stream
// and round:
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

// The first two Philox outputs of kStreams × 4 counters (stream s's 64-bit lanes in counters[s]), in the low
// halves. The streams are independent and interleaved round by round: one stream's round is a chain of
// mul (3 cycles) → shift → xor, so two streams leave the vector pipes idle part of the time; four streams (16
// counters, 16 state registers, the products of the next round issuing while the previous xors finish) ran
// 1.3× faster on Zen 3 than two, while six or eight spill registers (csrc/latent_cpu.cpp uses four).
template <int kStreams>
SIMVAE_AVX2 void philox_first_two_streams(const PhiloxKeys& keys, const __m256i* counters, __m256i* out0, __m256i* out1) {
  const __m256i round_a = _mm256_set1_epi64x(0xD2511F53u), round_b = _mm256_set1_epi64x(0xCD9E8D57u);
  __m256i c0[kStreams], c1[kStreams], c2[kStreams], c3[kStreams];
#pragma GCC unroll 8
  for (int s = 0; s < kStreams; ++s) {
    c0[s] = counters[s];
    c1[s] = _mm256_srli_epi64(counters[s], 32);
    c2[s] = c3[s] = _mm256_setzero_si256();
  }
#pragma GCC unroll 10
  for (int round = 0; round < 10; ++round) {
#pragma GCC unroll 8
    for (int s = 0; s < kStreams; ++s) {
      const __m256i product_b = _mm256_mul_epu32(c2[s], round_b);
      const __m256i product_a = _mm256_mul_epu32(c0[s], round_a);
      c0[s] = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(product_b, 32), c1[s]), keys.k0[round]);
      c1[s] = product_b;
      c2[s] = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(product_a, 32), c3[s]), keys.k1[round]);
      c3[s] = product_a;
    }
  }
#pragma GCC unroll 8
  for (int s = 0; s < kStreams; ++s) {
    out0[s] = c0[s];
    out1[s] = c1[s];
  }
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

// Uniforms u1[i] = uniform(out0), u2[i] = uniform(out1) of Philox for counters counter0 + i, i < 8·kBlocks:
// block b is an even and an odd stream.
template <int kBlocks>
SIMVAE_AVX2 void philox_uniforms(const PhiloxKeys& keys, uint64_t counter0, float* u1, float* u2) {
  __m256i counters[2 * kBlocks], out0[2 * kBlocks], out1[2 * kBlocks];
#pragma GCC unroll 4
  for (int b = 0; b < kBlocks; ++b) {
    const __m256i base = _mm256_set1_epi64x(static_cast<int64_t>(counter0 + 8 * b));
    counters[2 * b] = _mm256_add_epi64(base, _mm256_setr_epi64x(0, 2, 4, 6));
    counters[2 * b + 1] = _mm256_add_epi64(base, _mm256_setr_epi64x(1, 3, 5, 7));
  }
  philox_first_two_streams<2 * kBlocks>(keys, counters, out0, out1);
#pragma GCC unroll 4
  for (int b = 0; b < kBlocks; ++b) {
    _mm256_storeu_ps(u1 + 8 * b, uint32_to_uniform_x8(interleave_low_halves(out0[2 * b], out0[2 * b + 1])));
    _mm256_storeu_ps(u2 + 8 * b, uint32_to_uniform_x8(interleave_low_halves(out1[2 * b], out1[2 * b + 1])));
  }
}

#undef SIMVAE_AVX2

}  // namespace simvae
