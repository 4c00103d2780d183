// Host driver of the CUDA InfoNCE tile code (csrc/cuda/info_nce_{plan.h,tiles.cuh,rows.cuh}) under the host
// execution policy (csrc/cuda/exec_policy_host.h): every block of every kernel of one forward and one backward
// call, with the launchers' plan, in the order the CUDA launchers launch them. Built with g++ by
// tests/test_cuda_host.py, which compares the results with simvae_fast.reference.
//
//   info_nce_host IN OUT
// IN (little endian): int64 N, D, J, dtype (0 bfloat16, 1 float16, 2 float32 on tf32 tensor cores), normalize,
//   positives_logsumexp, deterministic, target_blocks; float32 temperature; z[N * D] (uint16, or float32);
//   float32 w[N] (dL/dloss_i).
// OUT: float32 lse[N], pos[N], loss[N], dz[N * D] (16-bit results widened), dtau.
// Exit status 3 with a message on stderr when the race recorder (or a shared-memory bounds check) fires, 4 when
// an mma.tf32 operand was not rounded to tf32.
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "cuda/exec_policy_host.h"
#include "cuda/info_nce_plan.h"
#include "cuda/info_nce_rows.cuh"
#include "cuda/info_nce_tiles.cuh"

using namespace simvae::tiles;

namespace {

struct Input {
  int64_t N, D, J, dtype, normalize, positives_lse, deterministic, target_blocks;
  float temperature;
  std::vector<unsigned char> z;
  std::vector<float> w;
};

Input read_input(const char* path) {
  Input in{};
  FILE* f = fopen(path, "rb");
  if (f == nullptr) throw std::runtime_error("cannot open the input file");
  int64_t header[8];
  bool ok = fread(header, 8, 8, f) == 8 && fread(&in.temperature, 4, 1, f) == 1;
  in.N = header[0], in.D = header[1], in.J = header[2], in.dtype = header[3], in.normalize = header[4];
  in.positives_lse = header[5], in.deterministic = header[6], in.target_blocks = header[7];
  in.z.resize(in.N * in.D * (in.dtype == 2 ? 4 : 2));
  in.w.resize(in.N);
  ok = ok && fread(in.z.data(), 1, in.z.size(), f) == in.z.size();
  ok = ok && fread(in.w.data(), 4, in.w.size(), f) == in.w.size();
  fclose(f);
  if (!ok) throw std::runtime_error("short input file");
  return in;
}

// A workspace as the launchers get it: uninitialised (here: NaN bytes), maxima and the atomic du zeroed.
std::vector<unsigned char> workspace(const Plan& plan) {
  std::vector<unsigned char> ws(plan.bytes, 0xff);
  memset(ws.data() + plan.maxima, 0, 8);
  if (plan.backward && plan.sweep.symmetric)
    memset(ws.data() + plan.du, 0, size_t(4) * plan.du_parts() * plan.rows() * plan.dims);
  return ws;
}

template <class F>
void run_blocks(int64_t blocks, uint32_t smem_bytes, F body) {
  for (int64_t b = 0; b < blocks; ++b) {
    BlockSim sim(smem_bytes);
    body(int(b));
    if (!sim.idle()) throw RaceError("a block ended with cp.async copies it never waited for");
  }
}

template <class E, int kDims>
void run(const Input& in, std::vector<float>& out) {
  const int64_t N = in.N, D = in.D;
  const int target = int(in.target_blocks);
  const int64_t row_blocks = (N + kWarpsPerBlock - 1) / kWarpsPerBlock;
  std::vector<float> lse(N), pos(N), loss(N), dtau(1);
  std::vector<typename E::Bits> dz(N * D);

  // Forward.
  const Plan fp = make_plan<E>(N, D, true, false, false, target);
  std::vector<unsigned char> fws = workspace(fp);
  auto at = [](std::vector<unsigned char>& ws, size_t off) { return ws.data() + off; };
  float* inv = reinterpret_cast<float*>(at(fws, fp.inv));
  void* zp = fp.copy ? at(fws, fp.zp) : nullptr;
  RowProblem rp{in.z.data(), N, D, in.J, &in.temperature, inv, in.normalize != 0, in.positives_lse != 0};
  PrepArgs prep{rp, nullptr, inv, reinterpret_cast<float*>(at(fws, fp.maxima)), zp, fp.pitch};
  run_blocks(row_blocks, 16, [&](int b) { prep_rows<HostPolicy, E>(prep, b); });
  TileProblem tp{fp.copy ? zp : in.z.data(), fp.copy ? fp.pitch : D, int(N), fp.sweep, &in.temperature, inv};
  ForwardTileArgs fa{tp, reinterpret_cast<MaxSum*>(at(fws, fp.row_part)),
                     reinterpret_cast<MaxSum*>(at(fws, fp.col_part))};
  run_blocks(fp.sweep.blocks(), TileSmem<E, kDims, false>::kBytes,
             [&](int b) { forward_block<HostPolicy, E, kDims>(fa, b); });
  ForwardRowArgs fr{rp, fp.sweep, fa.row_part, fa.col_part, lse.data(), pos.data(), loss.data()};
  run_blocks(row_blocks, 16, [&](int b) { forward_rows<HostPolicy, E>(fr, b); });

  // Backward, from the forward's lse and pos.
  const Plan bp = make_plan<E>(N, D, true, true, in.deterministic != 0, target);
  std::vector<unsigned char> bws = workspace(bp);
  float* binv = reinterpret_cast<float*>(at(bws, bp.inv));
  float* maxima = reinterpret_cast<float*>(at(bws, bp.maxima));
  void* bzp = bp.copy ? at(bws, bp.zp) : nullptr;
  RowProblem brp = rp;
  brp.inv_norm = binv;
  PrepArgs bprep{brp, in.w.data(), binv, maxima, bzp, bp.pitch};
  run_blocks(row_blocks, 16, [&](int b) { prep_rows<HostPolicy, E>(bprep, b); });
  TileProblem btp{bp.copy ? bzp : in.z.data(), bp.copy ? bp.pitch : D, int(N), bp.sweep, &in.temperature, binv};
  float* du = reinterpret_cast<float*>(at(bws, bp.du));
  float* ds_part = reinterpret_cast<float*>(at(bws, bp.ds_part));
  BackwardTileArgs ba{btp, lse.data(), in.w.data(), maxima, du, ds_part};
  const uint32_t smem = bp.sweep.symmetric ? TileSmem<E, kDims, true>::kBytes : TileSmem<E, kDims, false>::kBytes;
  run_blocks(bp.sweep.blocks(), smem, [&](int b) {
    if (bp.sweep.symmetric)
      backward_block<HostPolicy, E, kDims, true>(ba, b);
    else
      backward_block<HostPolicy, E, kDims, false>(ba, b);
  });
  float* dscale_rows = reinterpret_cast<float*>(at(bws, bp.dscale_rows));
  BackwardRowArgs br{brp, in.w.data(), pos.data(), maxima, du,
                     bp.du_parts(), bp.dims, bp.rows(), dscale_rows, dz.data()};
  run_blocks(row_blocks, 16, [&](int b) { backward_rows<HostPolicy, E>(br, b); });
  run_blocks(1, 16, [&](int) {
    dscale_sum<HostPolicy>(ds_part, bp.sweep.blocks(), dscale_rows, N, &in.temperature, dtau.data());
  });

  out.insert(out.end(), lse.begin(), lse.end());
  out.insert(out.end(), pos.begin(), pos.end());
  out.insert(out.end(), loss.begin(), loss.end());
  for (typename E::Bits h : dz) out.push_back(E::to_float(h));
  out.push_back(dtau[0]);
}

template <class E>
void run_dims(const Input& in, std::vector<float>& out) {
  switch (tile_dims<E>(in.D)) {
    case 32: return run<E, 32>(in, out);
    case 64: return run<E, 64>(in, out);
    case 128: return run<E, 128>(in, out);
    case 256:
      if constexpr (max_dims<E>() >= 256) return run<E, 256>(in, out);
      [[fallthrough]];
    default: throw std::runtime_error("D too wide for the tile kernels");
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s IN OUT\n", argv[0]);
    return 2;
  }
  try {
    const Input in = read_input(argv[1]);
    std::vector<float> out;
    if (in.dtype == 0)
      run_dims<Bf16>(in, out);
    else if (in.dtype == 1)
      run_dims<F16>(in, out);
    else
      run_dims<Tf32>(in, out);
    FILE* f = fopen(argv[2], "wb");
    if (f == nullptr || fwrite(out.data(), 4, out.size(), f) != out.size()) throw std::runtime_error("cannot write");
    fclose(f);
  } catch (const RaceError& e) {
    fprintf(stderr, "%s\n", e.what());
    return 3;
  } catch (const OperandError& e) {
    fprintf(stderr, "%s\n", e.what());
    return 4;
  } catch (const std::exception& e) {
    fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
