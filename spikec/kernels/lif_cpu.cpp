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
#include <vector>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace {

// Neurons per chunk: the chunk's state arrays stay in L1; 256..4096 measured alike (memory bound).
constexpr int64_t CHUNK = 512;

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

struct F16 {
  using S = _Float16;
  using O = float;
  static inline O load(S a) { return static_cast<float>(a); }
  static inline S store(O a) { return static_cast<_Float16>(a); }
  static inline O round(O a) { return load(store(a)); }
};

struct BF16 {
  using S = uint16_t;
  using O = float;
  static inline O load(S a) {
    uint32_t u = static_cast<uint32_t>(a) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  static inline S store(O a) {  // round to nearest even, NaN stays NaN (as c10::BFloat16)
    uint32_t u;
    std::memcpy(&u, &a, 4);
    uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return static_cast<S>(a != a ? 0x7fc0u : rounded);
  }
  static inline O round(O a) { return load(store(a)); }
};

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
  alignas(64) O v[CHUNK], b[CHUNK], th[CHUNK];
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
      const S* xr = x + t * N + c0;
      for (int64_t i = 0; i < len; ++i) {
        O h = K::round(K::round(b[i] * v[i]) + K::load(xr[i]));
        O d = K::round(h - th[i]);
        bool s = d >= O(0);
        s_buf[i] = s ? one : zero;
        if constexpr (SAVE) h_buf[i] = K::store(h);
        if constexpr (ZERO) {
          v[i] = s ? O(0) : h;
        } else {
          v[i] = s ? d : h;
        }
      }
      write_out(spikes + t * N + c0, s_buf, len * sizeof(S), stream);
      if constexpr (SAVE) write_out(charge + t * N + c0, h_buf, len * sizeof(S), stream);
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
  // Per-chunk state; the inner loop below reads only these and whole rows, with no branch, so it
  // vectorises (a missing spike gradient reads a row of zeros, v_{t-1} is prepared in `vp`).
  alignas(64) O g[CHUNK], b[CHUNK], th[CHUNK], gb[CHUNK], gt[CHUNK], vp[CHUNK];
  alignas(64) S dx_buf[CHUNK], no_grad[CHUNK];
  const S zero = K::store(O(0));
  for (int64_t i = 0; i < CHUNK; ++i) no_grad[i] = zero;
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
      const S* hr = charge + t * N + c0;
      const S* gsr = grad_spikes ? grad_spikes + t * N + c0 : no_grad;
      if constexpr (BETA_GRAD) {  // the membrane before this step, recomputed from the saved charge
        if (t > 0) {
          const S* hp = charge + (t - 1) * N + c0;
          for (int64_t i = 0; i < len; ++i) {
            O hprev = K::load(hp[i]);
            O dprev = K::round(hprev - th[i]);
            vp[i] = dprev >= O(0) ? (ZERO ? O(0) : dprev) : hprev;
          }
        } else {
          for (int64_t i = 0; i < len; ++i) vp[i] = K::load(v0[c0 + i]);
        }
      }
      for (int64_t i = 0; i < len; ++i) {
        O h = K::load(hr[i]);
        O d = K::round(h - th[i]);
        bool s = d >= O(0);
        O sg = surrogate_derivative<O>(surrogate, d, alpha);
        O gs = K::load(gsr[i]);
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
        dx_buf[i] = K::store(gh);
        if constexpr (BETA_GRAD) gb[i] += gh * vp[i];
        g[i] = gh * b[i];
      }
      write_out(dx + t * N + c0, dx_buf, len * sizeof(S), stream);
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
