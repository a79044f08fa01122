// block_matmul.cpp: y = x W^T for a few rows x (decoding) and a block-quantized weight W.
//
// The format (minigemma/quantize/blocks.py, which is also the reference this must agree with):
// every row of W is cut into blocks of 32 weights, each stored as small integers with one float16
// scale, 8-bit (like llama.cpp's Q8_0) or 4-bit (like Q4_0). The input rows are rounded to 8-bit
// blocks too, once per call. Then
//
//     y[m][n] = sum_b  dw[n][b] * dx[m][b] * isum,   isum = sum_{j<32} qw[n][32b+j] * qx[m][32b+j]
//
// and isum is an exact integer that SIMD computes 32 products at a time. At batch 1 a matmul
// reads every weight once and does two flops per weight, so its speed is set by bytes read, and
// 8.5 (or 4.5) bits per weight instead of 32 is the whole point. The arithmetic only has to keep up.
//
// Three code paths for the same numbers, picked by the caller (`isa`), all in this one file:
// each x86 function carries __attribute__((target(...))), so the compiler may use those
// instructions inside it alone, and the file is built without -march=native. Which paths the
// CPU can run is asked at run time (supported_isas). On other CPUs only the portable path exists.
//
// Layout: x (M, K) float32; qw int8 (N, K), or uint8 (N, K/2) for 4 bits (byte j of a block:
// element j in the low nibble, element j+16 in the high one, each stored as q+8); dw float16
// (N, K/32). Output y (M, N) float32.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <tuple>

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__)  // gcc and clang: target attributes
#define MG_X86 1
#include <immintrin.h>
#define TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define TARGET_VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")))
#else
#define MG_X86 0
#endif

#if defined(__GNUC__)
#define MG_PREFETCH(address) __builtin_prefetch(address)
#else
#define MG_PREFETCH(address) ((void)0)
#endif

namespace {

constexpr int64_t BLOCK = 32;  // weights per scale
enum Isa : int64_t { GENERIC = 0, AVX2 = 1, AVX512VNNI = 2 };  // the op's `isa` argument, and bits of supported_isas

// Everything the inner loops read, as raw pointers (tensors stay alive in block_matmul).
struct Problem {
  const int8_t* qx;     // (M, K)   the input rows, rounded to int8
  const float* dx;      // (M, nb)  their block scales
  const float* xsum;    // (M, nb)  the sum of each input block's integers (exact in float)
  const uint8_t* qw;    // (N, row_bytes)  the weight's integers, one row per output
  const at::Half* dw;   // (N, nb)  its block scales
  float* y;             // (M, N)
  int64_t M, N, K, nb, row_bytes;  // nb = K / 32 blocks per row
};

// ------------------------------------------------------------------ rounding the input rows
// d = amax/127, inv = 1/d (0 for an all-zero block), q = round-half-to-even(x * inv), clamped.
// Each float operation is one IEEE operation in both versions below and in blocks.py, so all three
// give the same bits. (nearbyintf rounds in the current mode, round-to-nearest-even by default.)

void quantize_generic(const float* x, int64_t blocks, int8_t* q, float* d_out) {
  for (int64_t i = 0; i < blocks; ++i) {  // the blocks of all rows are consecutive: row i/nb, block i%nb
    const float* xb = x + i * BLOCK;
    float amax = 0.f;
    for (int j = 0; j < BLOCK; ++j) amax = std::max(amax, std::fabs(xb[j]));
    const float d = amax / 127.f;
    const float inv = d != 0.f ? 1.f / d : 0.f;
    d_out[i] = d;
    for (int j = 0; j < BLOCK; ++j) {
      // The clamp is for safety: |x * inv| <= 127 * (1 + 2^-23), which rounds to 127 anyway.
      const float r = std::max(-127.f, std::min(127.f, std::nearbyint(xb[j] * inv)));
      q[i * BLOCK + j] = static_cast<int8_t>(r);
    }
  }
}

#if MG_X86
TARGET_AVX2 void quantize_avx2(const float* x, int64_t blocks, int8_t* q, float* d_out) {
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  const __m256 hi = _mm256_set1_ps(127.f), lo = _mm256_set1_ps(-127.f);
  for (int64_t i = 0; i < blocks; ++i) {
    __m256 v[4], amax8 = _mm256_setzero_ps();
    for (int k = 0; k < 4; ++k) {
      v[k] = _mm256_loadu_ps(x + i * BLOCK + 8 * k);
      amax8 = _mm256_max_ps(amax8, _mm256_andnot_ps(sign_bit, v[k]));  // |v|: clear the sign bit
    }
    // max of 8 lanes: halve the register three times.
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax8), _mm256_extractf128_ps(amax8, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float d = _mm_cvtss_f32(m4) / 127.f;
    const __m256 inv = _mm256_set1_ps(d != 0.f ? 1.f / d : 0.f);
    d_out[i] = d;
    __m256i n[4];
    for (int k = 0; k < 4; ++k) {
      __m256 r = _mm256_round_ps(_mm256_mul_ps(v[k], inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      n[k] = _mm256_cvtps_epi32(_mm256_max_ps(_mm256_min_ps(r, hi), lo));  // exact: r is an integer
    }
    // 32 int32 -> 32 int8 by two saturating packs. The packs work within each 128-bit half, so
    // the 4-byte groups come out as n0[0:4] n1[0:4] n2[0:4] n3[0:4] | n0[4:8] n1[4:8] ...;
    // one permute of 32-bit groups puts them back in order.
    const __m256i b8 = _mm256_packs_epi16(_mm256_packs_epi32(n[0], n[1]), _mm256_packs_epi32(n[2], n[3]));
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i * BLOCK), _mm256_permutevar8x32_epi32(b8, order));
  }
}
#endif

// ------------------------------------------------------------------ tiles
// The work is cut into tiles: NR consecutive output rows (weight rows) times R input rows, all
// K/32 blocks. Inside a tile each weight block is loaded (and unpacked) once for its R input
// rows, and each input block once for its NR weight rows; the NR * R sums stay in registers.
// With more input rows than R, the next tile reads the same weight rows again, from L1 cache:
// from memory, each weight is read once whatever M is. Every path provides the same tile
// functions; `run_rows` (below) walks a range of output rows.
//
// Four output rows per tile measured faster than one for a single input row (four independent
// chains of FMAs instead of one, and one load of each input block for four dot products); two
// and four measured alike.
constexpr int NR = 4;  // output rows per tile (the last few rows of a range: one per tile)
// Input rows per tile: 1 or 2, whatever is left. With 4 output rows that is 8 accumulators,
// which fits AVX2's 16 registers next to the loaded blocks.
constexpr int R_MAX = 2;

// ------------------------------------------------------------------ the portable path
// Plain loops; the compiler vectorizes some of them for the baseline ISA (SSE2 on x86-64).

template <int BITS, int TN, int TR>
void tile_generic(const Problem& p, int64_t n, int64_t m) {
  float acc[TN][TR] = {};
  int8_t w[BLOCK];
  for (int64_t b = 0; b < p.nb; ++b) {
    for (int i = 0; i < TN; ++i) {
      const uint8_t* row = p.qw + (n + i) * p.row_bytes;
      if (BITS == 8) {
        std::copy_n(reinterpret_cast<const int8_t*>(row) + b * BLOCK, BLOCK, w);
      } else {  // byte j: element j in the low nibble, j + 16 in the high one, both as q + 8
        const uint8_t* packed = row + b * (BLOCK / 2);
        for (int j = 0; j < BLOCK / 2; ++j) {
          w[j] = static_cast<int8_t>((packed[j] & 0x0F) - 8);
          w[j + BLOCK / 2] = static_cast<int8_t>((packed[j] >> 4) - 8);
        }
      }
      const float dw = static_cast<float>(p.dw[(n + i) * p.nb + b]);  // c10::Half knows the float16 format
      for (int r = 0; r < TR; ++r) {
        const int8_t* x = p.qx + (m + r) * p.K + b * BLOCK;
        int32_t isum = 0;  // exact: |isum| <= 32 * 127 * 127
        for (int j = 0; j < BLOCK; ++j) isum += int32_t(w[j]) * int32_t(x[j]);
        acc[i][r] += static_cast<float>(isum) * (dw * p.dx[(m + r) * p.nb + b]);
      }
    }
  }
  for (int i = 0; i < TN; ++i)
    for (int r = 0; r < TR; ++r) p.y[(m + r) * p.N + n + i] = acc[i][r];
}

#if MG_X86
// ------------------------------------------------------------------ the x86 paths

// One weight block as 32 bytes. 8 bits: the signed values as stored. 4 bits: 16 bytes hold the
// block; AND keeps the low nibbles (elements 0..15), shift + AND the high ones (16..31), already
// in order thanks to the layout, so no shuffle is needed. (x86 has no byte shift: shifting 16-bit
// lanes drags in bits of the neighbouring byte, which the mask removes.) The 4-bit values stay
// q + 8, in 0..15: unsigned, which is what the multiply instructions below want.
template <int BITS>
TARGET_AVX2 inline __m256i load_weights(const uint8_t* row, int64_t b) {
  if (BITS == 8) return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + b * BLOCK));
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + b * (BLOCK / 2)));
  const __m128i nibble = _mm_set1_epi8(0x0F);
  const __m128i low = _mm_and_si128(packed, nibble);
  const __m128i high = _mm_and_si128(_mm_srli_epi16(packed, 4), nibble);
  return _mm256_set_m128i(high, low);
}

// 32 products w * x summed in groups of 4 into 8 int32 lanes, AVX2.
// x86's byte multiply-add, maddubs, multiplies an UNSIGNED byte by a signed one (and adds pairs
// into int16). For 8 bits, move w's sign onto x: |w| * (x * sign(w)) = w * x, where
// sign_epi8(a, s) negates a where s < 0 and zeroes it where s == 0. Why the grid is -127..127,
// never -128: negating -128 does not fit a signed byte (it wraps to -128 again), so the trick
// would be wrong for it. The int16 pair sums cannot saturate: 2 * 127 * 127 < 32767.
// For 4 bits the stored q + 8 is unsigned already: multiply it as it is, which gives
// sum (q + 8) x, 8 * sum(x) too much; the tile removes that surplus (OFFSET, in tile_simd).
// A madd with ones then adds the int16 pairs into int32.
template <int BITS>
TARGET_AVX2 inline __m256i dot_avx2(__m256i w, __m256i x) {
  const __m256i pairs = BITS == 4 ? _mm256_maddubs_epi16(w, x)
                                  : _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
  return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
}

// Same with VNNI: dpbusd (AVX512_VNNI, on 256-bit registers through AVX512VL) does the 32
// unsigned x signed byte products and adds each group of 4 into an int32 lane in one instruction:
// maddubs + madd become one, with no int16 step that could saturate. So 8 bits need no sign
// trick either: flipping the top bit of a signed byte adds 128 to it, which makes w + 128 an
// unsigned byte, and the tile removes the surplus 128 * sum(x) as for 4 bits. One XOR instead of
// two sign instructions.
template <int BITS>
TARGET_VNNI inline __m256i dot_vnni(__m256i w, __m256i x) {
  const __m256i unsigned_w = BITS == 4 ? w : _mm256_xor_si256(w, _mm256_set1_epi8(static_cast<char>(0x80)));
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), unsigned_w, x);
}

// 8 float lanes -> their sum.
TARGET_AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// The tile of tile_generic, vectorized. Each (output row, input row) pair keeps 8 float partial
// sums; per block: the integer dot (8 int32 lanes) -> float, times the block's combined scale
// dw * dx spread over the 8 lanes, added by one FMA. The 8 lanes are summed once, at the end.
//
// The combined scales are computed 4 blocks at a time (4 float16 weight scales converted by one
// instruction, times 4 activation scales): per block that leaves one permute to spread its scale
// over the lanes, where a scalar float16 conversion, a multiply and a broadcast per block made
// the first version of this loop 25% slower. A row whose length is not a multiple of 4 blocks
// (128 values; every Gemma's is) ends block by block.
//
// DOT is the path's integer dot product of a block (dot_avx2 or dot_vnni). Where it computes
// sum((w + OFFSET) * x) instead of sum(w * x), the surplus OFFSET * xsum depends only on the
// input block, so it is removed once per 4 blocks, in float: OFFSET * sum_b dw_b * dx_b * xsum_b.
template <int BITS, int TN, int TR, int OFFSET, __m256i (*DOT)(__m256i, __m256i)>
TARGET_AVX2 inline void tile_simd(const Problem& p, int64_t n, int64_t m) {
  __m256 acc[TN][TR];
  for (int i = 0; i < TN; ++i)
    for (int r = 0; r < TR; ++r) acc[i][r] = _mm256_setzero_ps();
  const uint16_t* dw = reinterpret_cast<const uint16_t*>(p.dw) + n * p.nb;  // float16 bits
  const int64_t whole = p.nb / 4 * 4;
  for (int64_t b0 = 0; b0 < whole; b0 += 4) {
    __m256 scale[TN][TR];  // dw * dx of blocks b0..b0+3, twice: s0 s1 s2 s3 s0 s1 s2 s3
    for (int i = 0; i < TN; ++i) {
      const __m128 d4 = _mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(dw + i * p.nb + b0)));  // F16C
      for (int r = 0; r < TR; ++r) {
        const __m128 s4 = _mm_mul_ps(d4, _mm_loadu_ps(p.dx + (m + r) * p.nb + b0));
        scale[i][r] = _mm256_set_m128(s4, s4);
        if (OFFSET) {  // into 4 of the 8 lanes: all 8 are summed in the end
          const __m128 surplus = _mm_mul_ps(s4, _mm_loadu_ps(p.xsum + (m + r) * p.nb + b0));
          acc[i][r] = _mm256_fnmadd_ps(_mm256_set1_ps(OFFSET), _mm256_zextps128_ps256(surplus), acc[i][r]);
        }
      }
    }
    for (int j = 0; j < 4; ++j) {  // unrolled by the compiler: the permute's lane index is a constant
      const __m256i lane = _mm256_set1_epi32(j);
      __m256i x[TR];
      for (int r = 0; r < TR; ++r)
        x[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.qx + (m + r) * p.K + (b0 + j) * BLOCK));
      for (int i = 0; i < TN; ++i) {
        const __m256i w = load_weights<BITS>(p.qw + (n + i) * p.row_bytes, b0 + j);
        for (int r = 0; r < TR; ++r)
          acc[i][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(DOT(w, x[r])), _mm256_permutevar8x32_ps(scale[i][r], lane),
                                      acc[i][r]);
      }
    }
  }
  float surplus[TN][TR] = {};
  for (int64_t b = whole; b < p.nb; ++b) {  // the last blocks of an odd-length row, one at a time
    for (int i = 0; i < TN; ++i) {
      const __m256i w = load_weights<BITS>(p.qw + (n + i) * p.row_bytes, b);
      const float d = _cvtsh_ss(dw[i * p.nb + b]);
      for (int r = 0; r < TR; ++r) {
        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.qx + (m + r) * p.K + b * BLOCK));
        const float s = d * p.dx[(m + r) * p.nb + b];
        acc[i][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(DOT(w, x)), _mm256_set1_ps(s), acc[i][r]);
        surplus[i][r] += OFFSET * s * p.xsum[(m + r) * p.nb + b];
      }
    }
  }
  for (int i = 0; i < TN; ++i)
    for (int r = 0; r < TR; ++r) p.y[(m + r) * p.N + n + i] = hsum(acc[i][r]) - surplus[i][r];
}

// The two SIMD paths: one body, each compiled for its own instructions. A function's target
// attribute cannot depend on a template parameter, so each path has its own function, and
// `flatten` inlines the body (and the dot inside it) into it: without it the compiler would call
// dot_vnni once per block from the AVX2-only body (measured 2x slower).
template <int BITS, int TN, int TR>
TARGET_AVX2 __attribute__((flatten)) void tile_avx2(const Problem& p, int64_t n, int64_t m) {
  tile_simd<BITS, TN, TR, BITS == 4 ? 8 : 0, dot_avx2<BITS>>(p, n, m);
}

template <int BITS, int TN, int TR>
TARGET_VNNI __attribute__((flatten)) void tile_vnni(const Problem& p, int64_t n, int64_t m) {
  tile_simd<BITS, TN, TR, BITS == 4 ? 8 : 128, dot_vnni<BITS>>(p, n, m);
}
#endif

// ------------------------------------------------------------------ walking the rows

using Tile = void (*)(const Problem&, int64_t n, int64_t m);
struct Tiles { Tile fn[2][R_MAX]; };  // [NR output rows? (else 1)][input rows - 1]
#define MG_TILES(TILE, BITS) Tiles{{{TILE<BITS, 1, 1>, TILE<BITS, 1, 2>}, {TILE<BITS, NR, 1>, TILE<BITS, NR, 2>}}}

// How far ahead of the tile being computed the weights are prefetched, in bytes. A plain sum
// streams memory as fast as the machine can read it; this loop does more work per byte, and
// without the explicit prefetch it read big matrices far slower than that (measured on a 2-core
// Xeon and a 2-core EPYC: 7.6 instead of 20.7 GB/s on the 262k x 640 projection): the hardware
// prefetcher alone did not run far enough ahead. With two threads 16 KB measured best (4 KB:
// 23 GB/s, 16 KB: 31, 32-64 KB: no better; benchmarks/RESULTS.md).
constexpr int64_t PREFETCH_BYTES = 16384;

// Output rows [n_begin, n_end), every input row. The rows of a tile are consecutive in memory,
// so the bytes to prefetch are one contiguous range, a few rows ahead.
void run_rows(const Problem& p, const Tiles& tiles, int64_t n_begin, int64_t n_end) {
  const int64_t ahead = std::max<int64_t>(1, PREFETCH_BYTES / p.row_bytes);  // in rows
  for (int64_t n = n_begin; n < n_end;) {
    const int tn = n_end - n >= NR ? NR : 1;
    const int64_t first = std::min(n + ahead, p.N), last = std::min(n + ahead + tn, p.N);
    for (int64_t byte = first * p.row_bytes; byte < last * p.row_bytes; byte += 64)  // one cache line each
      MG_PREFETCH(p.qw + byte);
    for (int64_t m = 0; m < p.M;) {
      const int tr = static_cast<int>(std::min<int64_t>(R_MAX, p.M - m));
      tiles.fn[tn == NR][tr - 1](p, n, m);
      m += tr;
    }
    n += tn;
  }
}

// ------------------------------------------------------------------ the operators

int64_t supported_isas() {
  int64_t mask = 1 << GENERIC;
#if MG_X86
  // gcc's and clang's run-time CPUID check, which also asks the OS whether it saves the wide registers.
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  if (avx2) mask |= 1 << AVX2;
  if (avx2 && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw"))
    mask |= 1 << AVX512VNNI;
#endif
  return mask;
}

void check_isa(int64_t isa) {
  TORCH_CHECK(isa >= 0 && isa <= AVX512VNNI && (supported_isas() >> isa & 1),
              "minigemma_blocks: isa ", isa, " is not supported on this CPU (supported_isas() = ", supported_isas(), ")");
}

std::tuple<at::Tensor, at::Tensor> quantize_activations(const at::Tensor& x, int64_t isa) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous(),
              "minigemma_blocks: x must be a contiguous 2-D float32 tensor");
  TORCH_CHECK(x.size(1) % BLOCK == 0, "minigemma_blocks: x has ", x.size(1), " columns, not a multiple of 32");
  check_isa(isa);
  const int64_t M = x.size(0), K = x.size(1), blocks = M * K / BLOCK;
  at::Tensor q = at::empty({M, K}, x.options().dtype(at::kChar));
  at::Tensor d = at::empty({M, K / BLOCK}, x.options());
  // M * K is a few thousand values: one thread, well under a microsecond per row.
#if MG_X86
  if (isa != GENERIC) {
    quantize_avx2(x.data_ptr<float>(), blocks, q.data_ptr<int8_t>(), d.data_ptr<float>());
    return {q, d};
  }
#endif
  quantize_generic(x.data_ptr<float>(), blocks, q.data_ptr<int8_t>(), d.data_ptr<float>());
  return {q, d};
}

at::Tensor block_matmul(const at::Tensor& x, const at::Tensor& q, const at::Tensor& scales, int64_t bits, int64_t isa) {
  auto [qx, dx] = quantize_activations(x, isa);  // checks x and isa
  TORCH_CHECK(bits == 8 || bits == 4, "minigemma_blocks: bits must be 8 or 4, got ", bits);
  const int64_t M = x.size(0), K = x.size(1), nb = K / BLOCK, row_bytes = bits == 8 ? K : K / 2;
  TORCH_CHECK(q.dim() == 2 && q.is_contiguous() && q.size(1) == row_bytes &&
                  q.scalar_type() == (bits == 8 ? at::kChar : at::kByte),
              "minigemma_blocks: q must be contiguous ", bits == 8 ? "int8" : "uint8", " (N, ", row_bytes, ")");
  const int64_t N = q.size(0);
  TORCH_CHECK(scales.dim() == 2 && scales.is_contiguous() && scales.scalar_type() == at::kHalf &&
                  scales.size(0) == N && scales.size(1) == nb,
              "minigemma_blocks: scales must be contiguous float16 (", N, ", ", nb, ")");
  at::Tensor y = at::empty({M, N}, x.options());
  // The SIMD tiles that multiply w + OFFSET remove OFFSET * sum(x) per block (tile_simd).
  at::Tensor xsum = at::empty({M, nb}, x.options());
  for (int64_t i = 0; i < M * nb; ++i) {
    const int8_t* block = qx.data_ptr<int8_t>() + i * BLOCK;
    xsum.data_ptr<float>()[i] = static_cast<float>(std::accumulate(block, block + BLOCK, int32_t(0)));
  }
  const Problem p{qx.data_ptr<int8_t>(), dx.data_ptr<float>(), xsum.data_ptr<float>(),
                  reinterpret_cast<const uint8_t*>(q.data_ptr()), scales.data_ptr<at::Half>(), y.data_ptr<float>(),
                  M, N, K, nb, row_bytes};

  Tiles tiles = bits == 8 ? MG_TILES(tile_generic, 8) : MG_TILES(tile_generic, 4);
#if MG_X86
  if (isa == AVX2) tiles = bits == 8 ? MG_TILES(tile_avx2, 8) : MG_TILES(tile_avx2, 4);
  if (isa == AVX512VNNI) tiles = bits == 8 ? MG_TILES(tile_vnni, 8) : MG_TILES(tile_vnni, 4);
#endif
  // Output rows are independent: split them over PyTorch's threads. at::parallel_for is OpenMP
  // code inlined from PyTorch's headers: it runs in parallel only if this file is compiled with
  // -fopenmp (native.py does so on Linux), and serially otherwise. The grain (at least ~64 KB
  // of weights per chunk) keeps a small matrix on one thread, where waking others costs more
  // than it saves.
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) / row_bytes);
  at::parallel_for(0, N, grain, [&](int64_t begin, int64_t end) { run_rows(p, tiles, begin, end); });
  return y;
}

}  // namespace

// Registered as operators (torch.ops.minigemma_blocks.*), not a Python module: torch.compile
// sees each call as one opaque node (native.py gives it the output shape through register_fake).
TORCH_LIBRARY(minigemma_blocks, m) {
  m.def("block_matmul(Tensor x, Tensor q, Tensor scales, int bits, int isa) -> Tensor");
  m.def("quantize_activations(Tensor x, int isa) -> (Tensor, Tensor)");
  m.def("supported_isas() -> int", &supported_isas);  // no tensor argument: one kernel for every backend
}

TORCH_LIBRARY_IMPL(minigemma_blocks, CPU, m) {
  m.impl("block_matmul", &block_matmul);
  m.impl("quantize_activations", &quantize_activations);
}
