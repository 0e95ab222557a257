// Vectorised row primitives for the CPU kernels: tiles are converted to the accumulation type once,
// exponentials use ATen's Vectorized (SLEEF) exp, and the log-sum-exp is accumulated online per tile.
#pragma once
#include <ATen/OpMathType.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace posttrain::cpu {

// 2048 floats = 8 KiB: a tile and its exponentials stay in L1 while it is reduced.
constexpr int64_t kTile = 2048;

template <typename T>
using acc_t = at::opmath_type<T>;

inline int64_t num_tiles(int64_t n) { return (n + kTile - 1) / kTile; }

template <typename T>
constexpr T neg_inf() { return -std::numeric_limits<T>::infinity(); }

// dst[i] = acc(src[i]) * scale
template <typename scalar_t, typename A = acc_t<scalar_t>>
inline void load_scaled(const scalar_t* src, A* dst, int64_t n, A scale) {
  using Vec = at::vec::Vectorized<A>;
  const Vec vs(scale);
  int64_t i = 0;
  if constexpr (std::is_same_v<scalar_t, A>) {
    for (; i + Vec::size() <= n; i += Vec::size()) (Vec::loadu(src + i) * vs).store(dst + i);
  } else {
    using bVec = at::vec::Vectorized<scalar_t>;
    for (; i + bVec::size() <= n; i += bVec::size()) {
      auto [a, b] = at::vec::convert_to_float<scalar_t>(bVec::loadu(src + i));
      (a * vs).store(dst + i);
      (b * vs).store(dst + i + Vec::size());
    }
  }
  for (; i < n; ++i) dst[i] = static_cast<A>(src[i]) * scale;
}

// dst[i] = scalar_t(src[i])
template <typename scalar_t, typename A = acc_t<scalar_t>>
inline void store_from_acc(const A* src, scalar_t* dst, int64_t n) {
  int64_t i = 0;
  if constexpr (std::is_same_v<scalar_t, A>) {
    std::copy(src, src + n, dst);
    return;
  } else {
    using Vec = at::vec::Vectorized<A>;
    using bVec = at::vec::Vectorized<scalar_t>;
    for (; i + bVec::size() <= n; i += bVec::size()) {
      at::vec::convert_from_float<scalar_t>(Vec::loadu(src + i), Vec::loadu(src + i + Vec::size())).store(dst + i);
    }
  }
  for (; i < n; ++i) dst[i] = static_cast<scalar_t>(src[i]);
}

template <typename A>
inline A vec_max(const A* x, int64_t n) {
  using Vec = at::vec::Vectorized<A>;
  Vec vm(neg_inf<A>());
  int64_t i = 0;
  for (; i + Vec::size() <= n; i += Vec::size()) vm = at::vec::maximum(vm, Vec::loadu(x + i));
  A m = at::vec::vec_reduce_all<A>([](Vec& a, Vec& b) { return at::vec::maximum(a, b); }, vm);
  for (; i < n; ++i) m = std::max(m, x[i]);
  return m;
}

// Σ exp(x - m); stores exp(x - m) into out when out != nullptr (out may alias x). m == -inf gives 0.
template <typename A>
inline A vec_exp_sum(const A* x, int64_t n, A m, A* out) {
  using Vec = at::vec::Vectorized<A>;
  if (m == neg_inf<A>()) {
    if (out) std::fill(out, out + n, A(0));
    return A(0);
  }
  const Vec vm(m);
  Vec acc(A(0));
  int64_t i = 0;
  for (; i + Vec::size() <= n; i += Vec::size()) {
    Vec e = (Vec::loadu(x + i) - vm).exp();
    if (out) e.store(out + i);
    acc += e;
  }
  A s = at::vec::vec_reduce_all<A>([](Vec& a, Vec& b) { return a + b; }, acc);
  for (; i < n; ++i) {
    A e = std::exp(x[i] - m);
    if (out) out[i] = e;
    s += e;
  }
  return s;
}

// Running (max, Σ exp(x - max)) merged tile by tile: one read of the row, no separate max pass.
template <typename A>
struct OnlineLse {
  A m = neg_inf<A>();
  A s = A(0);
  void add(A tile_max, A tile_sum) {
    if (!(tile_sum > A(0))) return;
    if (tile_max > m) {
      s = s * std::exp(m - tile_max) + tile_sum;
      m = tile_max;
    } else {
      s += tile_sum * std::exp(tile_max - m);
    }
  }
  A lse() const { return s > A(0) ? m + std::log(s) : neg_inf<A>(); }
};

// log Σ exp(scale * x) over a row of n. With cache (n) and tile_max (num_tiles(n)) it also keeps
// exp(scale * x - tile_max) so probabilities are cache * exp(tile_max - lse) without a second exp.
template <typename scalar_t, typename A = acc_t<scalar_t>>
inline A row_lse(const scalar_t* x, int64_t n, A scale, A* tile_buf, A* cache = nullptr, A* tile_max = nullptr) {
  OnlineLse<A> acc;
  for (int64_t t0 = 0, t = 0; t0 < n; t0 += kTile, ++t) {
    const int64_t len = std::min(kTile, n - t0);
    A* buf = cache ? cache + t0 : tile_buf;
    load_scaled<scalar_t, A>(x + t0, buf, len, scale);
    const A m = vec_max(buf, len);
    const A s = vec_exp_sum(buf, len, m, cache ? buf : nullptr);
    if (tile_max) tile_max[t] = m;
    acc.add(m, s);
  }
  return acc.lse();
}

// Large outputs (a (N, V) gradient) are written once into fresh pages; on Linux, asking for transparent huge pages
// before the first touch cuts the page-fault cost, which otherwise rivals the exponentials. A hint only.
inline void advise_huge_pages(void* ptr, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr size_t kHuge = size_t(2) << 20;
  if (bytes < 2 * kHuge) return;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(ptr) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(ptr) + bytes) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#endif
}

// Per-thread scratch that grows to the largest row seen; avoids an allocation per row.
template <typename A>
struct Scratch {
  std::vector<A> buf;
  A* get(size_t n) {
    if (buf.size() < n) buf.resize(n);
    return buf.data();
  }
};

}  // namespace posttrain::cpu
