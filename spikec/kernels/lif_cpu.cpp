// Fused multi-step LIF/IF update over [T, N] on the CPU.
//
// Built at first use by spikec/kernels/cpu_build.py and called through ctypes with raw pointers,
// so it needs no torch headers: a few seconds to build, against a minute for a torch extension.
//
// Neurons are cut into chunks of CHUNK; threads take pieces of a few chunks each. Inside a
// chunk the loop runs over time and the inner loop over neurons is contiguous in memory, so it
// vectorises; the membrane of the chunk stays in a small stack array (L1), never in memory.
// Each output row segment is built in an L1 buffer, then written out: with streaming stores when
// the output is too large to stay cached, after asking for huge pages on the fresh output.
//
// Arithmetic mirrors the torch reference op by op: every op on fp16/bf16 is computed in float and
// rounded back to the storage type (as ATen does), and the build disables FMA contraction, so the
// spikes equal the reference bit for bit. Gradients are accumulated in float (double for fp64).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <type_traits>
#include <vector>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__F16C__) && defined(__AVX__)
#include <immintrin.h>
#endif
#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace {

// Neurons per chunk: long enough row segments for the prefetchers (2048 beat 512 by 15-25%), small
// enough for the chunk state to stay in L2.
constexpr int64_t CHUNK = 2048;

struct F32 {
  using S = float;
  using O = float;
  static inline O load(S a) { return a; }
  static inline S store(O a) { return a; }
  static inline O round(O a) { return a; }
};

struct F64 {
  using S = double;
  using O = double;
  static inline O load(S a) { return a; }
  static inline S store(O a) { return a; }
  static inline O round(O a) { return a; }
};

inline float float_from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// fp16 and bf16 are converted with integer arithmetic and selects rather than _Float16 casts:
// without AVX512-FP16 the compiler cannot vectorise those casts (a 20x slower loop).
struct F16 {
  using S = uint16_t;
  using O = float;
  static inline O load(S a) {
    const uint32_t h = a, sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    const uint32_t normal = sign | ((e + 112u) << 23) | (m << 13);  // rebias 15 -> 127
    const uint32_t inf_nan = sign | 0x7f800000u | (m << 13);
    const float sub = float(int32_t(m)) * 5.9604644775390625e-8f;  // m * 2^-24, exact
    const float subnormal = sign ? -sub : sub;
    return e == 0 ? subnormal : float_from_bits(e == 31 ? inf_nan : normal);
  }
  static inline S store(O a) {  // round to nearest even, as torch's float -> half
    const uint32_t u = bits_of(a), sign = (u >> 16) & 0x8000u, au = u & 0x7fffffffu;
    const uint32_t r = au + 0xfffu + ((au >> 13) & 1u);  // mantissa rounded to 10 bits
    const uint32_t normal = (r >> 13) - (112u << 10);
    const float scaled = (float_from_bits(au) * 16777216.0f + 8388608.0f) - 8388608.0f;  // |a| / 2^-24, rounded
    const uint32_t subnormal = uint32_t(int32_t(scaled));
    const uint32_t h = au > 0x7f800000u ? 0x7e00u            // NaN
                       : au < 0x38800000u ? subnormal       // below 2^-14
                       : r >= 0x47800000u ? 0x7c00u         // rounds to 2^16 or more: inf
                                          : normal;
    return static_cast<S>(sign | h);
  }
  static inline O round(O a) {  // load(store(a)) without building the half's bits
    const uint32_t u = bits_of(a), sign = u & 0x80000000u, au = u & 0x7fffffffu;
    const uint32_t normal = (au + 0xfffu + ((au >> 13) & 1u)) & 0xffffe000u;
    const uint32_t subnormal = bits_of((float_from_bits(au) + 0.5f) - 0.5f);  // to a multiple of 2^-24
    const uint32_t r = au > 0x7f800000u ? au : au < 0x38800000u ? subnormal : normal >= 0x47800000u ? 0x7f800000u : normal;
    return float_from_bits(sign | r);
  }
};

struct BF16 {
  using S = uint16_t;
  using O = float;
  static inline O load(S a) { return float_from_bits(uint32_t(a) << 16); }
  static inline S store(O a) {  // round to nearest even; NaN stays NaN (as c10::BFloat16)
    const uint32_t u = bits_of(a);
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return static_cast<S>((u & 0x7fffffffu) > 0x7f800000u ? (u >> 16) | 0x40u : rounded);
  }
  static inline O round(O a) { return load(store(a)); }
};

// A row segment in the op dtype: the storage itself for float/double, else converted into `buf`.
template <class K>
inline const typename K::O* row_as_op(const typename K::S* src, typename K::O* buf, int64_t n) {
  if constexpr (std::is_same_v<typename K::S, typename K::O>) {
    return src;
  } else {
    int64_t i = 0;
#if defined(__F16C__) && defined(__AVX__)
    if constexpr (std::is_same_v<K, F16>) {  // hardware conversion, exact
      for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(buf + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
    }
#endif
    for (; i < n; ++i) buf[i] = K::load(src[i]);
    return buf;
  }
}

// A row segment in the storage dtype: `src` itself for float/double, else rounded into `buf`.
template <class K>
inline const typename K::S* row_as_storage(const typename K::O* src, typename K::S* buf, int64_t n) {
  if constexpr (std::is_same_v<typename K::S, typename K::O>) {
    return src;
  } else {
    int64_t i = 0;
#if defined(__F16C__) && defined(__AVX__)
    if constexpr (std::is_same_v<K, F16>) {  // round to nearest even, as torch
      for (; i + 8 <= n; i += 8)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(buf + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
#endif
    for (; i < n; ++i) buf[i] = K::store(src[i]);
    return buf;
  }
}

enum Surrogate { ARCTAN = 0, FAST_SIGMOID = 1, TRIANGLE = 2, STRAIGHT_THROUGH = 3 };

// All four closed forms, then a select: branch-free, so the loop still vectorises, and one compiled
// loop serves every surrogate (a quarter of the build time of one instantiation each).
template <class O>
inline O surrogate_derivative(int code, O d, O alpha) {
  const O ad = std::fabs(d);
  const O z = O(1.5707963267948966) * alpha * d;
  const O arctan = (alpha / O(2)) / (O(1) + z * z);
  const O fs = O(1) + alpha * ad;
  const O fast_sigmoid = O(1) / (fs * fs);
  const O triangle = alpha * std::max(O(0), O(1) - alpha * ad);
  return code == ARCTAN ? arctan : code == FAST_SIGMOID ? fast_sigmoid : code == TRIANGLE ? triangle : O(1);
}

// Run fn(n0, n1) over [0, N) in chunk-aligned pieces on up to `threads` threads. Threads take the
// next piece from a shared counter, so a thread the OS descheduled (a shared machine) delays only
// its current piece, not a fixed half of the work.
template <class Fn>
void parallel_over_neurons(int64_t N, int64_t work, int threads, Fn fn) {
  const int64_t chunks = (N + CHUNK - 1) / CHUNK;
  const int64_t p = std::max<int64_t>(1, std::min<int64_t>({(int64_t)threads, chunks, work / (1 << 16) + 1}));
  if (p == 1) {
    fn(0, N);
    return;
  }
  const int64_t piece = std::max<int64_t>(1, chunks / (16 * p)) * CHUNK;
  const int64_t pieces = (N + piece - 1) / piece;
  std::atomic<int64_t> next{0};
  auto worker = [&]() {
    for (int64_t i = next++; i < pieces; i = next++) fn(i * piece, std::min(N, (i + 1) * piece));
  };
  std::vector<std::thread> pool;
  for (int64_t i = 1; i < p; ++i) {
    try {
      pool.emplace_back(worker);
    } catch (...) {  // no more threads: the ones running take every piece anyway
      break;
    }
  }
  worker();
  for (auto& th : pool) th.join();
}

// Outputs larger than this bypass the caches (non-temporal stores): no read-for-ownership of the
// destination lines, so a pass writes like memcpy does. Smaller outputs stay cached for the next layer.
constexpr int64_t STREAM_BYTES = int64_t(16) << 20;

// Copy one row segment from an L1 buffer to its destination, streaming when asked.
inline void write_out(void* dst, const void* src, size_t n, bool stream) {
#if defined(__SSE2__)
  if (stream) {
    char* d = static_cast<char*>(dst);
    const char* s = static_cast<const char*>(src);
    size_t head = std::min(n, size_t((16 - (reinterpret_cast<uintptr_t>(d) & 15)) & 15));
    std::memcpy(d, s, head);
    d += head, s += head, n -= head;
    for (; n >= 16; n -= 16, d += 16, s += 16)
      _mm_stream_si128(reinterpret_cast<__m128i*>(d), _mm_loadu_si128(reinterpret_cast<const __m128i*>(s)));
    std::memcpy(d, s, n);
    return;
  }
#endif
  std::memcpy(dst, src, n);
}

// Fresh outputs are first touched here. Asking for transparent huge pages on them (as torch's own
// THP_MEM_ALLOC_ENABLE=1 does) replaces 512 page faults by one: on a VM the faults cost more than
// the kernel's arithmetic and its memory traffic together.
inline void advise_huge_pages(void* p, int64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const uintptr_t huge = uintptr_t(1) << 21;
  const uintptr_t start = (reinterpret_cast<uintptr_t>(p) + huge - 1) & ~(huge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + uintptr_t(bytes)) & ~(huge - 1);
  if (p != nullptr && end > start) madvise(reinterpret_cast<void*>(start), end - start, MADV_HUGEPAGE);
#endif
}

inline void finish_streaming() {
#if defined(__SSE2__)
  _mm_sfence();  // order this thread's streamed stores before it reports done
#endif
}

template <class K, bool ZERO, bool SAVE>
void forward_range(const typename K::S* x, const typename K::S* v0, const typename K::O* beta, int64_t beta_step,
                   const typename K::O* thr, int64_t thr_step, typename K::S* spikes, typename K::S* v_out,
                   typename K::S* charge, int64_t T, int64_t N, int64_t n0, int64_t n1) {
  using O = typename K::O;
  using S = typename K::S;
  alignas(64) O v[CHUNK], b[CHUNK], th[CHUNK], x_op[CHUNK], h_op[CHUNK];
  alignas(64) S s_buf[CHUNK], h_buf[CHUNK];
  const S one = K::store(O(1)), zero = K::store(O(0));
  const bool stream = T * N * int64_t(sizeof(S)) > STREAM_BYTES;
  for (int64_t c0 = n0; c0 < n1; c0 += CHUNK) {
    const int64_t len = std::min(CHUNK, n1 - c0);
    for (int64_t i = 0; i < len; ++i) {
      v[i] = K::load(v0[c0 + i]);
      b[i] = beta[(c0 + i) * beta_step];
      th[i] = thr[(c0 + i) * thr_step];
    }
    for (int64_t t = 0; t < T; ++t) {
      const O* xr = row_as_op<K>(x + t * N + c0, x_op, len);
      for (int64_t i = 0; i < len; ++i) {
        O h = K::round(K::round(b[i] * v[i]) + xr[i]);
        O d = K::round(h - th[i]);
        bool s = d >= O(0);
        s_buf[i] = s ? one : zero;
        if constexpr (SAVE) h_op[i] = h;
        if constexpr (ZERO) {
          v[i] = s ? O(0) : h;
        } else {
          v[i] = s ? d : h;
        }
      }
      write_out(spikes + t * N + c0, s_buf, len * sizeof(S), stream);
      if constexpr (SAVE) write_out(charge + t * N + c0, row_as_storage<K>(h_op, h_buf, len), len * sizeof(S), stream);
    }
    for (int64_t i = 0; i < len; ++i) v_out[c0 + i] = K::store(v[i]);
  }
  finish_streaming();
}

template <class K, bool ZERO, bool BETA_GRAD>
void backward_range(int surrogate, const typename K::S* grad_spikes, const typename K::S* grad_v,
                    const typename K::S* charge, const typename K::S* v0, const typename K::O* beta,
                    int64_t beta_step, const typename K::O* thr, int64_t thr_step, typename K::O alpha,
                    typename K::O reset_grad, typename K::S* dx, typename K::S* dv0, typename K::O* dbeta,
                    typename K::O* dthr, int64_t T, int64_t N, int64_t n0, int64_t n1) {
  using O = typename K::O;
  using S = typename K::S;
  // Per-chunk state and op-dtype rows; the inner loop reads only these, with no branch, so it
  // vectorises (a missing spike gradient reads a row of zeros, v_{t-1} is prepared in `vp`).
  alignas(64) O g[CHUNK], b[CHUNK], th[CHUNK], gb[CHUNK], gt[CHUNK], vp[CHUNK], dx_op[CHUNK], no_grad[CHUNK];
  alignas(64) O h_op[CHUNK], gs_op[CHUNK], hp_op[CHUNK];
  alignas(64) S dx_buf[CHUNK];
  for (int64_t i = 0; i < CHUNK; ++i) no_grad[i] = O(0);
  const bool stream = T * N * int64_t(sizeof(S)) > STREAM_BYTES;
  for (int64_t c0 = n0; c0 < n1; c0 += CHUNK) {
    const int64_t len = std::min(CHUNK, n1 - c0);
    for (int64_t i = 0; i < len; ++i) {
      g[i] = grad_v ? K::load(grad_v[c0 + i]) : O(0);
      b[i] = beta[(c0 + i) * beta_step];
      th[i] = thr[(c0 + i) * thr_step];
      gb[i] = O(0);
      gt[i] = O(0);
    }
    for (int64_t t = T - 1; t >= 0; --t) {
      const O* __restrict hr = row_as_op<K>(charge + t * N + c0, h_op, len);
      const O* __restrict gsr = grad_spikes ? row_as_op<K>(grad_spikes + t * N + c0, gs_op, len) : no_grad;
      if constexpr (BETA_GRAD) {  // the membrane before this step, recomputed from the saved charge
        if (t > 0) {
          const O* hp = row_as_op<K>(charge + (t - 1) * N + c0, hp_op, len);
          for (int64_t i = 0; i < len; ++i) {
            O dprev = K::round(hp[i] - th[i]);
            vp[i] = dprev >= O(0) ? (ZERO ? O(0) : dprev) : hp[i];
          }
        } else {
          for (int64_t i = 0; i < len; ++i) vp[i] = K::load(v0[c0 + i]);
        }
      }
      for (int64_t i = 0; i < len; ++i) {
        O h = hr[i];
        O d = K::round(h - th[i]);
        bool s = d >= O(0);
        O sg = surrogate_derivative<O>(surrogate, d, alpha);
        O gs = gsr[i];
        O gv = g[i];
        // ds/dh = sg, ds/dthr = -sg; the reset feeds gv back into s unless detached (reset_grad = 0).
        O gthrough, gh;
        if constexpr (ZERO) {  // v' = h * (1 - s)
          gthrough = (gs - reset_grad * h * gv) * sg;
          gh = (s ? O(0) : gv) + gthrough;
          gt[i] -= gthrough;
        } else {  // v' = h - s * thr
          gthrough = (gs - reset_grad * th[i] * gv) * sg;
          gh = gv + gthrough;
          gt[i] -= gthrough + (s ? gv : O(0));
        }
        dx_op[i] = gh;
        if constexpr (BETA_GRAD) gb[i] += gh * vp[i];
        g[i] = gh * b[i];
      }
      write_out(dx + t * N + c0, row_as_storage<K>(dx_op, dx_buf, len), len * sizeof(S), stream);
    }
    for (int64_t i = 0; i < len; ++i) {
      dv0[c0 + i] = K::store(g[i]);
      if (dthr) dthr[c0 + i] = gt[i];
      if (BETA_GRAD) dbeta[c0 + i] = gb[i];
    }
  }
  finish_streaming();
}

template <class K>
void forward_dtype(const void* x, const void* v0, const void* beta, int64_t beta_step, const void* thr,
                   int64_t thr_step, void* spikes, void* v_out, void* charge, int64_t T, int64_t N, int zero,
                   int threads) {
  using S = typename K::S;
  using O = typename K::O;
  advise_huge_pages(spikes, T * N * int64_t(sizeof(S)));
  advise_huge_pages(charge, T * N * int64_t(sizeof(S)));
  auto args = [&](auto kernel) {
    parallel_over_neurons(N, T * N, threads, [&, kernel](int64_t n0, int64_t n1) {
      kernel((const S*)x, (const S*)v0, (const O*)beta, beta_step, (const O*)thr, thr_step, (S*)spikes, (S*)v_out,
             (S*)charge, T, N, n0, n1);
    });
  };
  if (zero) {
    charge ? args(forward_range<K, true, true>) : args(forward_range<K, true, false>);
  } else {
    charge ? args(forward_range<K, false, true>) : args(forward_range<K, false, false>);
  }
}

template <class K>
int backward_dtype(int surrogate, const void* gs, const void* gv, const void* charge, const void* v0,
                   const void* beta, int64_t beta_step, const void* thr, int64_t thr_step, double alpha,
                   double reset_grad, void* dx, void* dv0, void* dbeta, void* dthr, int64_t T, int64_t N, int zero,
                   int threads) {
  using S = typename K::S;
  using O = typename K::O;
  if (surrogate < ARCTAN || surrogate > STRAIGHT_THROUGH) return 2;
  advise_huge_pages(dx, T * N * int64_t(sizeof(S)));
  auto args = [&](auto kernel) {
    parallel_over_neurons(N, T * N, threads, [&, kernel](int64_t n0, int64_t n1) {
      kernel(surrogate, (const S*)gs, (const S*)gv, (const S*)charge, (const S*)v0, (const O*)beta, beta_step,
             (const O*)thr, thr_step, (O)alpha, (O)reset_grad, (S*)dx, (S*)dv0, (O*)dbeta, (O*)dthr, T, N, n0, n1);
    });
  };
  if (zero) {
    dbeta ? args(backward_range<K, true, true>) : args(backward_range<K, true, false>);
  } else {
    dbeta ? args(backward_range<K, false, true>) : args(backward_range<K, false, false>);
  }
  return 0;
}

}  // namespace

// dtype codes: 0 float32, 1 float16, 2 bfloat16, 3 float64. beta/thr are in the op dtype (float, or
// double for float64), with step 0 (one value) or 1 (one per neuron). Returns 0 on success.
extern "C" int spikec_lif_forward(int dtype, const void* x, const void* v0, const void* beta, int64_t beta_step,
                                  const void* thr, int64_t thr_step, void* spikes, void* v_out, void* charge,
                                  int64_t T, int64_t N, int zero, int threads) {
  switch (dtype) {
    case 0: forward_dtype<F32>(x, v0, beta, beta_step, thr, thr_step, spikes, v_out, charge, T, N, zero, threads); return 0;
    case 1: forward_dtype<F16>(x, v0, beta, beta_step, thr, thr_step, spikes, v_out, charge, T, N, zero, threads); return 0;
    case 2: forward_dtype<BF16>(x, v0, beta, beta_step, thr, thr_step, spikes, v_out, charge, T, N, zero, threads); return 0;
    case 3: forward_dtype<F64>(x, v0, beta, beta_step, thr, thr_step, spikes, v_out, charge, T, N, zero, threads); return 0;
  }
  return 1;
}

// grad_spikes and grad_v may be null (zero gradient); dbeta/dthr may be null (not needed). They are
// per-neuron partial sums over time in the op dtype; the caller reduces them to the parameter shape.
extern "C" int spikec_lif_backward(int dtype, int surrogate, const void* grad_spikes, const void* grad_v,
                                   const void* charge, const void* v0, const void* beta, int64_t beta_step,
                                   const void* thr, int64_t thr_step, double alpha, int detach_reset, void* dx,
                                   void* dv0, void* dbeta, void* dthr, int64_t T, int64_t N, int zero, int threads) {
  double reset_grad = detach_reset ? 0.0 : 1.0;
  switch (dtype) {
    case 0: return backward_dtype<F32>(surrogate, grad_spikes, grad_v, charge, v0, beta, beta_step, thr, thr_step, alpha, reset_grad, dx, dv0, dbeta, dthr, T, N, zero, threads);
    case 1: return backward_dtype<F16>(surrogate, grad_spikes, grad_v, charge, v0, beta, beta_step, thr, thr_step, alpha, reset_grad, dx, dv0, dbeta, dthr, T, N, zero, threads);
    case 2: return backward_dtype<BF16>(surrogate, grad_spikes, grad_v, charge, v0, beta, beta_step, thr, thr_step, alpha, reset_grad, dx, dv0, dbeta, dthr, T, N, zero, threads);
    case 3: return backward_dtype<F64>(surrogate, grad_spikes, grad_v, charge, v0, beta, beta_step, thr, thr_step, alpha, reset_grad, dx, dv0, dbeta, dthr, T, N, zero, threads);
  }
  return 1;
}
