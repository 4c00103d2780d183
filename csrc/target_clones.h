// Function multiversioning for the CPU kernels: SIMVAE_SIMD_CLONES compiles a function twice, for x86-64-v3
// (AVX2 + FMA) and for the baseline, and the loader picks the copy the CPU supports (gcc's target_clones,
// resolved once through an ifunc). Only where that works: gcc (clang's target_clones differs), x86-64, and
// glibc (ifuncs; musl has none). Elsewhere, or with -DSIMVAE_NO_TARGET_CLONES, every function is compiled
// once for the build's target and SIMVAE_HAVE_TARGET_CLONES is 0, so the explicit AVX2 paths are left out.
#pragma once
#include <cstdint>  // defines __GLIBC__ on glibc

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__) && \
    !defined(SIMVAE_NO_TARGET_CLONES)
#define SIMVAE_HAVE_TARGET_CLONES 1
#define SIMVAE_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define SIMVAE_HAVE_TARGET_CLONES 0
#define SIMVAE_SIMD_CLONES
#endif

// Helpers called from a cloned function are always_inline: gcc does not inline a plain function into a clone
// of another architecture, and a call in a loop stops its vectorisation (for vector arguments it would also
// change the calling convention between the clones).
#define SIMVAE_INLINE inline __attribute__((always_inline))
