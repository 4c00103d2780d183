// The host execution policy of the tile code (info_nce_tiles.cuh): one block at a time, its warps run one
// after another through each phase (the code between two barriers), each warp's 32 lanes emulated, with the
// members of exec_policy_device.cuh (read that header for the interface). Compiled by g++ only
// (tests/cuda_host/), never into the extension.
//
// Race recorder: every shared-memory word remembers which warps wrote and read it in the current phase. A word
// written by one warp and read or written by another in the same phase is a race (on the device the warps run
// concurrently); so is a read, by another lane of the writer's warp, without a syncwarp between. A cp.async
// destination counts as written by its thread from the issue until that thread's cp_async_wait_all (the bytes
// land there, in the phase of the wait); reading it before the wait is an error. Shared memory starts filled
// with 0xff bytes (NaN in bf16, fp16 and fp32), so a word read before anything was written shows up.
//
// Tensor-core operands: mma<Tf32> checks that every operand is a tf32 value (low 13 bits 0, as
// cvt.rna.tf32.f32 leaves it) and throws an OperandError otherwise (on the device: undefined behaviour).
//
// What this emulation cannot see, kept small on purpose:
//  - the tensor core's own arithmetic: mma here multiplies exactly (bf16/fp16/tf32 products are exact in fp32)
//    and adds in fp32 in k order; the hardware's internal order and rounding (it may truncate) differ at the
//    level of fp32 rounding (~1e-7 relative per addition); cvt.rna.tf32.f32 is emulated as ptxas 13.0 lowers
//    it for sm_90 (tile_types.h), which another toolchain or GPU may not (for NaN, the PTX ISA does not say);
//  - ex2.approx (2 ulp on the device) is std::exp2 here;
//  - warp-synchronous assumptions: a warp's lanes run one after another between collectives, so code that
//    relied on lanes of one warp being in lockstep without __syncwarp would pass here (the tile code has none:
//    every cross-lane exchange is a shuffle, ldmatrix or mma, or goes through a barrier);
//  - timing: cp.async latency, the interleaving of global atomics (their sum is order-dependent in the last
//    bits on the device), occupancy and bank conflicts; and register allocation (spills: the SASS check).
#pragma once
#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "tile_types.h"

namespace simvae {
namespace tiles {

class RaceError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class OperandError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The state of the block being emulated: shared memory, the recorder, pending cp.async copies.
class BlockSim {
 public:
  explicit BlockSim(size_t smem_bytes) : smem_(smem_bytes + 16, 0xff), words_(smem_.size() / 4) {
    current_ = this;
  }
  ~BlockSim() { current_ = nullptr; }
  static BlockSim& current() { return *current_; }

  unsigned char* bytes(uint32_t offset, uint32_t size) {
    if (offset + size > smem_.size() - 16 || offset % size != 0)
      fail("shared memory access of " + std::to_string(size) + " bytes at offset " + std::to_string(offset) +
           " outside the block's " + std::to_string(smem_.size() - 16) + " bytes or misaligned");
    return smem_.data() + offset;
  }

  void on_read(Thread t, uint32_t offset, uint32_t size) {
    for (uint32_t w = offset / 4; w < (offset + size + 3) / 4; ++w) {
      Word& s = word(w);
      if (s.pending) fail("reads a cp.async destination before cp_async_wait_all", t, w);
      if (s.writers & ~bit(t.warp)) fail("reads a word another warp wrote in this phase (missing barrier)", t, w);
      if ((s.writers & bit(t.warp)) && s.write_lane != t.lane && s.write_epoch == epoch_[t.warp])
        fail("reads a word another lane of its warp wrote, without a syncwarp or barrier", t, w);
      s.readers |= bit(t.warp);
    }
  }
  void on_write(Thread t, uint32_t offset, uint32_t size) {
    for (uint32_t w = offset / 4; w < (offset + size + 3) / 4; ++w) write_word(t, w);
  }

  void cp_async(Thread t, uint32_t offset, const void* src, bool valid) {
    bytes(offset, 16);
    on_write(t, offset, 16);
    for (uint32_t w = offset / 4; w < offset / 4 + 4; ++w) word(w).pending++;
    pending_.push_back({t, offset, static_cast<const unsigned char*>(src), valid});
  }
  void cp_async_wait_all(Thread t) {
    for (size_t i = 0; i < pending_.size();) {
      const Copy& c = pending_[i];
      if (c.thread.warp != t.warp || c.thread.lane != t.lane) {
        ++i;
        continue;
      }
      for (uint32_t w = c.offset / 4; w < c.offset / 4 + 4; ++w) word(w).pending--;
      on_write(t, c.offset, 16);
      if (c.valid)
        memcpy(smem_.data() + c.offset, c.src, 16);
      else
        memset(smem_.data() + c.offset, 0, 16);
      pending_.erase(pending_.begin() + i);
    }
  }

  // End of a phase: the recorder starts over; copies still in flight stay written by their threads.
  void end_phase() {
    ++phase_;
    for (const Copy& c : pending_)
      for (uint32_t w = c.offset / 4; w < c.offset / 4 + 4; ++w) write_word(c.thread, w);
  }
  void syncwarp(int warp) { ++epoch_[warp]; }
  bool idle() const { return pending_.empty(); }

 private:
  struct Word {
    uint32_t phase = ~0u, writers = 0, readers = 0, write_epoch = 0;
    int write_lane = -1, pending = 0;
  };
  struct Copy {
    Thread thread;
    uint32_t offset;
    const unsigned char* src;
    bool valid;
  };
  static uint32_t bit(int warp) { return 1u << warp; }
  Word& word(uint32_t w) {
    Word& s = words_[w];
    if (s.phase != phase_) {
      s.phase = phase_;
      s.writers = s.readers = 0;
      s.write_lane = -1;
    }
    return s;
  }
  void write_word(Thread t, uint32_t w) {
    Word& s = word(w);
    if ((s.writers | s.readers) & ~bit(t.warp))
      fail("writes a word another warp accessed in this phase (missing barrier)", t, w);
    s.writers |= bit(t.warp);
    s.write_lane = t.lane;
    s.write_epoch = epoch_[t.warp];
  }
  [[noreturn]] void fail(const std::string& what, Thread t, uint32_t w) {
    fail("race: warp " + std::to_string(t.warp) + " lane " + std::to_string(t.lane) + " " + what +
         " (byte offset " + std::to_string(4 * w) + ", phase " + std::to_string(phase_) + ")");
  }
  [[noreturn]] void fail(const std::string& what) { throw RaceError(what); }

  std::vector<unsigned char> smem_;
  std::vector<Word> words_;
  std::vector<Copy> pending_;
  uint32_t phase_ = 0, epoch_[kWarpsPerBlock] = {};
  static inline BlockSim* current_ = nullptr;
};

struct HostPolicy {
  template <class T>
  struct PerThread {
    T v[kWarpsPerBlock][32];
    T& operator[](Thread t) { return v[t.warp][t.lane]; }
    const T& operator[](Thread t) const { return v[t.warp][t.lane]; }
  };

  template <class F>
  static void each_warp(F&& f) {
    for (int w = 0; w < kWarpsPerBlock; ++w) f(w);
  }
  template <class F>
  static void each_lane(int warp, F&& f) {
    for (int l = 0; l < 32; ++l) f(Thread{warp, l});
  }
  static void barrier() { BlockSim::current().end_phase(); }
  static void syncwarp(int warp) { BlockSim::current().syncwarp(warp); }

  template <class T>
  static T lds(Thread t, uint32_t offset) {
    BlockSim& b = BlockSim::current();
    const unsigned char* p = b.bytes(offset, sizeof(T));
    b.on_read(t, offset, sizeof(T));
    T v;
    memcpy(&v, p, sizeof(T));
    return v;
  }
  template <class T>
  static void sts(Thread t, uint32_t offset, T value) {
    BlockSim& b = BlockSim::current();
    unsigned char* p = b.bytes(offset, sizeof(T));
    b.on_write(t, offset, sizeof(T));
    memcpy(p, &value, sizeof(T));
  }

  static void cp_async16(Thread t, uint32_t offset, const void* src, bool valid) {
    BlockSim::current().cp_async(t, offset, src, valid);
  }
  static void cp_async_commit(Thread) {}
  static void cp_async_wait_all(Thread t) { BlockSim::current().cp_async_wait_all(t); }

  // PTX ldmatrix .m8n8.x4.b16: lane l gives the address of row l % 8 of matrix l / 8 (16 bytes); register j
  // of lane l receives row l / 4, columns 2 (l % 4) and 2 (l % 4) + 1 of matrix j (of its transpose: .trans).
  template <class Out, class Address>
  static void ldmatrix_x4(int warp, bool trans, Out out, Address address) {
    uint16_t m[4][8][8];
    for (int l = 0; l < 32; ++l) {
      const Thread t{warp, l};
      const uint32_t a = address(t);
      BlockSim& b = BlockSim::current();
      memcpy(m[l / 8][l % 8], b.bytes(a, 16), 16);
      b.on_read(t, a, 16);
    }
    for (int l = 0; l < 32; ++l) {
      uint32_t* r = out(Thread{warp, l});
      const int row = l / 4, col = 2 * (l % 4);
      for (int j = 0; j < 4; ++j) {
        const uint16_t lo = trans ? m[j][col][row] : m[j][row][col];
        const uint16_t hi = trans ? m[j][col + 1][row] : m[j][row][col + 1];
        r[j] = uint32_t(lo) | (uint32_t(hi) << 16);
      }
    }
  }

  template <class E, class D, class A, class B>
  static void mma(int warp, D d_of, A a_of, B b_of) {
    if constexpr (E::kTf32)
      mma_m16n8k8_tf32(warp, d_of, a_of, b_of);
    else
      mma_m16n8k16<E>(warp, d_of, a_of, b_of);
  }

  // PTX mma.m16n8k16.row.col.f32.{bf16,f16}: with g = lane / 4, q = lane % 4,
  //   A (16 x 16): a[0] = (g, 2q..2q+1), a[1] = (g+8, 2q..), a[2] = (g, 2q+8..), a[3] = (g+8, 2q+8..)
  //   B (16 x 8):  b[0] = (k 2q..2q+1, n g), b[1] = (k 2q+8..2q+9, n g)
  //   C (16 x 8):  d[0..1] = (g, 2q..2q+1), d[2..3] = (g+8, 2q..2q+1)
  template <class E, class D, class A, class B>
  static void mma_m16n8k16(int warp, D d_of, A a_of, B b_of) {
    float a[16][16], b[16][8], c[16][8];
    auto lo = [](uint32_t r) { return E::to_float(uint16_t(r & 0xffffu)); };
    auto hi = [](uint32_t r) { return E::to_float(uint16_t(r >> 16)); };
    for (int l = 0; l < 32; ++l) {
      const Thread t{warp, l};
      const int g = l / 4, q = l % 4;
      const uint32_t* ar = a_of(t);
      const uint32_t* br = b_of(t);
      const float* dr = d_of(t);
      for (int h = 0; h < 2; ++h) {  // h: the 8-row (A, C) or 8-deep (B) half
        a[g + 8 * h][2 * q] = lo(ar[h]);
        a[g + 8 * h][2 * q + 1] = hi(ar[h]);
        a[g + 8 * h][2 * q + 8] = lo(ar[h + 2]);
        a[g + 8 * h][2 * q + 9] = hi(ar[h + 2]);
        b[2 * q + 8 * h][g] = lo(br[h]);
        b[2 * q + 1 + 8 * h][g] = hi(br[h]);
        c[g + 8 * h][2 * q] = dr[2 * h];
        c[g + 8 * h][2 * q + 1] = dr[2 * h + 1];
      }
    }
    for (int l = 0; l < 32; ++l) {
      float* dr = d_of(Thread{warp, l});
      const int g = l / 4, q = l % 4;
      for (int i = 0; i < 4; ++i) {
        const int row = g + 8 * (i / 2), col = 2 * q + i % 2;
        float acc = c[row][col];
        for (int k = 0; k < 16; ++k) acc += a[row][k] * b[k][col];  // each product exact in fp32
        dr[i] = acc;
      }
    }
  }

  // PTX mma.m16n8k8.row.col.f32.tf32.tf32.f32: with g = lane / 4, q = lane % 4,
  //   A (16 x 8): a[0] = (g, q), a[1] = (g+8, q), a[2] = (g, q+4), a[3] = (g+8, q+4)
  //   B (8 x 8):  b[0] = (k q, n g), b[1] = (k q+4, n g)
  //   C (16 x 8): as m16n8k16's
  template <class D, class A, class B>
  static void mma_m16n8k8_tf32(int warp, D d_of, A a_of, B b_of) {
    float a[16][8], b[8][8], c[16][8];
    auto tf32 = [warp](uint32_t r, int lane, const char* what) {
      if (r & Tf32::kDropped) {
        char hex[16];
        snprintf(hex, sizeof hex, "0x%08x", r);
        throw OperandError("mma.tf32: warp " + std::to_string(warp) + " lane " + std::to_string(lane) + ": " +
                           what + " operand " + hex + " is not rounded to tf32");
      }
      return bits_to_float(r);
    };
    for (int l = 0; l < 32; ++l) {
      const Thread t{warp, l};
      const int g = l / 4, q = l % 4;
      const uint32_t* ar = a_of(t);
      const uint32_t* br = b_of(t);
      const float* dr = d_of(t);
      for (int h = 0; h < 2; ++h) {  // h: the 8-row half of A and C, the 4-deep half of A's columns and B
        a[g][q + 4 * h] = tf32(ar[2 * h], l, "A");
        a[g + 8][q + 4 * h] = tf32(ar[2 * h + 1], l, "A");
        b[q + 4 * h][g] = tf32(br[h], l, "B");
        c[g + 8 * h][2 * q] = dr[2 * h];
        c[g + 8 * h][2 * q + 1] = dr[2 * h + 1];
      }
    }
    for (int l = 0; l < 32; ++l) {
      float* dr = d_of(Thread{warp, l});
      const int g = l / 4, q = l % 4;
      for (int i = 0; i < 4; ++i) {
        const int row = g + 8 * (i / 2), col = 2 * q + i % 2;
        float acc = c[row][col];
        for (int k = 0; k < 8; ++k) acc += a[row][k] * b[k][col];  // tf32 x tf32: exact in fp32
        dr[i] = acc;
      }
    }
  }

  template <class Src, class Dst>
  static void shfl_xor(int warp, Src src, Dst dst, int mask) {
    float v[32];
    for (int l = 0; l < 32; ++l) v[l] = src(Thread{warp, l});
    for (int l = 0; l < 32; ++l) dst(Thread{warp, l}) = v[l ^ mask];
  }

  static void red_add2(float* p, float a, float b) {
    p[0] += a;
    p[1] += b;
  }
  static void atomic_max_nonnegative(float* p, float v) {
    if (float_to_bits(v) > float_to_bits(*p)) *p = v;
  }
  static float exp2(float x) { return std::exp2(x); }
};

}  // namespace tiles
}  // namespace simvae
