// Speculative-decoding verification on CPU in two parallel phases: every (row, position) computes its online
// log-sum-exp and, from the exponentials kept in a thread-local row buffer, the expected acceptance Σ min(q, f(p));
// then each row runs the sequential acceptance test (one scalar exp per draft token) and a single residual or
// bonus inverse-CDF draw, which recomputes that one position's probabilities.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "op_args.h"
#include "cpu/row_math.h"

namespace posttrain::cpu {
namespace {

template <typename A>
using Vec = at::vec::Vectorized<A>;

// First index of the maximum (torch.argmax's tie rule).
template <typename scalar_t, typename A>
int64_t row_argmax(const scalar_t* x, int64_t V, A* tile) {
  A best = neg_inf<A>();
  int64_t arg = 0;
  for (int64_t t0 = 0; t0 < V; t0 += kTile) {
    const int64_t len = std::min(kTile, V - t0);
    load_scaled<scalar_t, A>(x + t0, tile, len, A(1));
    const A m = vec_max(tile, len);
    if (m > best) {
      best = m;
      arg = t0 + (std::find(tile, tile + len, m) - tile);
    }
  }
  return arg;
}

// Inverse CDF over non-negative weights: the first v with Σ_{w<=v} w > u · Σ w; the last positive weight when
// rounding leaves u · Σ w beyond the scan; -1 when every weight is 0.
template <typename A>
int64_t draw(const A* w, int64_t V, double u) {
  double total = 0;
  std::vector<double> tsum(num_tiles(V));
  for (int64_t t0 = 0, t = 0; t0 < V; t0 += kTile, ++t) {
    const int64_t len = std::min(kTile, V - t0);
    tsum[t] = double(at::vec::reduce_all<A>([](Vec<A>& a, Vec<A>& b) { return a + b; }, w + t0, len));
    total += tsum[t];
  }
  if (!(total > 0)) return -1;
  const double target = u * total;
  double acc = 0;
  for (int64_t t0 = 0, t = 0; t0 < V; t0 += kTile, ++t) {
    if (acc + tsum[t] <= target) {
      acc += tsum[t];
      continue;
    }
    const int64_t len = std::min(kTile, V - t0);
    for (int64_t i = 0; i < len; ++i) {
      acc += double(w[t0 + i]);
      if (acc > target) return t0 + i;
    }
  }
  int64_t last = V - 1;
  while (last > 0 && !(w[last] > A(0))) --last;
  return last;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> speculative_verify_cpu(const at::Tensor& draft_tokens_in,
                                                                      const at::Tensor& draft_probs_in,
                                                                      const at::Tensor& target_logits_in,
                                                                      const at::Tensor& uniforms_in, double temperature,
                                                                      c10::string_view mode_s, double lenience) {
  const VerifyMode mode = parse_verify_mode(mode_s);
  check_verify_args(draft_tokens_in, draft_probs_in, target_logits_in, uniforms_in, temperature, mode, lenience,
                    at::kCPU);
  const int64_t B = draft_tokens_in.size(0), G = draft_tokens_in.size(1), V = target_logits_in.size(2);
  const auto tokens_in = draft_tokens_in.to(at::kLong).contiguous();
  const auto uniforms = uniforms_in.to(at::kDouble).contiguous();
  {
    const int64_t* tk = tokens_in.const_data_ptr<int64_t>();
    for (int64_t i = 0; i < B * G; ++i)
      TORCH_CHECK_INDEX(tk[i] >= 0 && tk[i] < V, "draft_tokens holds ", tk[i], ", out of range for a vocabulary of ",
                        V);
    const double* u = uniforms.const_data_ptr<double>();
    for (int64_t i = 0; i < B * (G + 1); ++i)
      TORCH_CHECK_VALUE(u[i] >= 0.0 && u[i] < 1.0, "uniforms must lie in [0, 1), got ", u[i]);
  }
  const auto target = target_logits_in.contiguous();
  const auto fdt = target.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  // draft probs in the accumulation type: (B, γ, V) is read once per position, a cast copy costs one pass
  const auto q_all = draft_probs_in.to(fdt).contiguous();
  auto out_tokens = at::full({B, G + 1}, -1, tokens_in.options());
  auto out_n = at::empty({B}, tokens_in.options());
  auto expected = at::empty({B, G}, target.options().dtype(fdt));
  const double eps = mode == VerifyMode::kLenient ? lenience : 1.0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, target.scalar_type(), "speculative_verify_cpu", [&] {
    using A = acc_t<scalar_t>;
    const scalar_t* X = target.const_data_ptr<scalar_t>();
    const A* Q = q_all.const_data_ptr<A>();
    const int64_t* TK = tokens_in.const_data_ptr<int64_t>();
    const double* U = uniforms.const_data_ptr<double>();
    int64_t* OT = out_tokens.data_ptr<int64_t>();
    int64_t* ON = out_n.data_ptr<int64_t>();
    A* OE = expected.data_ptr<A>();
    const A inv_t = mode == VerifyMode::kGreedy ? A(1) : A(1.0 / temperature);
    const A inv_eps = A(1.0 / eps);
    const int64_t P = G + 1;
    // Phase 1, parallel over every (row, position): the position's lse (or argmax) and expected acceptance. The
    // positions of a row are independent until the sequential acceptance test, so B = 1 still uses every thread.
    std::vector<A> lse_all(B * P);
    std::vector<int64_t> argmax_all(mode == VerifyMode::kGreedy ? B * P : 0);
    at::parallel_for(0, B * P, 1, [&](int64_t begin, int64_t end) {
      const int64_t nt = num_tiles(V);
      std::vector<A> e(V), tile(kTile), tmax(nt);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / P, i = task % P;
        const scalar_t* row = X + task * V;
        if (mode == VerifyMode::kGreedy) {
          argmax_all[task] = row_argmax<scalar_t, A>(row, V, tile.data());
          if (i < G) OE[b * G + i] = argmax_all[task] == TK[b * G + i] ? A(1) : A(0);
          continue;
        }
        if (i == G) {  // the bonus position only needs its lse
          lse_all[task] = row_lse<scalar_t, A>(row, V, inv_t, tile.data());
          continue;
        }
        const A lse = row_lse<scalar_t, A>(row, V, inv_t, nullptr, e.data(), tmax.data());
        lse_all[task] = lse;
        const A* q = Q + (b * G + i) * V;
        A sum = 0;
        for (int64_t t0 = 0, t = 0; t0 < V; t0 += kTile, ++t) {
          const int64_t len = std::min(kTile, V - t0);
          const A s = std::exp(tmax[t] - lse) * inv_eps;  // f(p) = e * s
          sum += at::vec::map2_reduce_all<A>(
              [s](Vec<A> ee, Vec<A> qq) { return at::vec::minimum(qq, ee * Vec<A>(s)); },
              [](Vec<A> a, Vec<A> c) { return a + c; }, e.data() + t0, q + t0, len);
        }
        OE[b * G + i] = sum;
      }
    });
    // Phase 2, parallel over rows: the sequential acceptance test, then one residual or bonus draw per row.
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      const int64_t nt = num_tiles(V);
      std::vector<A> e(V), w(V), tmax(nt);
      for (int64_t b = begin; b < end; ++b) {
        const int64_t* x = TK + b * G;
        const double* u = U + b * P;
        int64_t n = G, extra = -1;
        for (int64_t i = 0; i < G && n == G; ++i) {
          const int64_t task = b * P + i;
          if (mode == VerifyMode::kGreedy) {
            if (argmax_all[task] != x[i]) n = i;
            continue;
          }
          const A px = std::exp(static_cast<A>(X[task * V + x[i]]) * inv_t - lse_all[task]);
          if (!(A(u[i]) * Q[(b * G + i) * V + x[i]] < px * inv_eps)) n = i;
        }
        const int64_t task = b * P + n;
        if (mode == VerifyMode::kGreedy) {
          extra = argmax_all[task];
        } else {
          // p at position n from its exponentials (w = p), then max(0, p - q) unless n is the bonus position
          const A lse = row_lse<scalar_t, A>(X + task * V, V, inv_t, nullptr, e.data(), tmax.data());
          for (int64_t t0 = 0, t = 0; t0 < V; t0 += kTile, ++t) {
            const int64_t len = std::min(kTile, V - t0);
            at::vec::map([s = std::exp(tmax[t] - lse)](Vec<A> v) { return v * Vec<A>(s); }, w.data() + t0,
                         e.data() + t0, len);
          }
          if (n < G) {
            at::vec::map2([](Vec<A> p, Vec<A> qq) { return at::vec::maximum(p - qq, Vec<A>(A(0))); }, e.data(),
                          w.data(), Q + (b * G + n) * V, V);
            extra = draw<A>(e.data(), V, u[G]);  // an empty residual (p == q) falls back to p below
          }
          if (extra < 0) extra = draw<A>(w.data(), V, u[G]);
        }
        for (int64_t i = 0; i < n; ++i) OT[b * P + i] = x[i];
        OT[b * P + n] = extra < 0 ? 0 : extra;
        ON[b] = n;
      }
    });
  });
  return {expected, out_tokens, out_n};
}

TORCH_LIBRARY_IMPL(posttrain, CPU, m) { m.impl("speculative_verify", &speculative_verify_cpu); }

}  // namespace posttrain::cpu
