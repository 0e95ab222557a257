// K-candidate token sampling on CPU by inverse CDF: one pass computes the row's exponentials (kept per row in a
// thread-local buffer) and per-tile masses; the K sorted uniforms then walk the tile masses and scan only the tiles
// they land in, so the cost is O(V + K log K + K·tile), not O(K·V), and no (N, V) tensor is formed.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <numeric>

#include "op_args.h"
#include "cpu/row_math.h"

namespace posttrain::cpu {
namespace {

template <typename A>
using Vec = at::vec::Vectorized<A>;

// Smallest tempered logit kept by top-k then top-p (ties with it are kept); -inf keeps everything.
template <typename A>
A truncation_threshold(const A* x, int64_t V, int64_t top_k, double top_p, std::vector<A>& sorted) {
  A thr = neg_inf<A>();
  if (top_k <= 0 && top_p >= 1.0) return thr;
  int64_t kept = V;
  if (top_k > 0 && top_k < V) {
    kept = top_k;
    if (top_k <= 4096) {
      // a min-heap of the k largest: after the first k elements almost every x fails one comparison, so this is
      // about one pass over the row rather than nth_element's several
      sorted.assign(x, x + top_k);
      std::make_heap(sorted.begin(), sorted.end(), std::greater<A>());
      for (int64_t v = top_k; v < V; ++v) {
        if (x[v] > sorted.front()) {
          std::pop_heap(sorted.begin(), sorted.end(), std::greater<A>());
          sorted.back() = x[v];
          std::push_heap(sorted.begin(), sorted.end(), std::greater<A>());
        }
      }
      thr = sorted.front();
    } else {
      sorted.assign(x, x + V);
      std::nth_element(sorted.begin(), sorted.begin() + (top_k - 1), sorted.end(), std::greater<A>());
      thr = sorted[top_k - 1];
    }
  } else {
    sorted.assign(x, x + V);
  }
  if (top_p < 1.0) {
    std::sort(sorted.begin(), sorted.begin() + kept, std::greater<A>());
    if (sorted[0] == neg_inf<A>()) return thr;
    double total = 0;
    for (int64_t i = 0; i < kept; ++i) total += std::exp(double(sorted[i]) - double(sorted[0]));
    double cum = 0;
    for (int64_t i = 0; i < kept; ++i) {
      cum += std::exp(double(sorted[i]) - double(sorted[0]));
      if (cum / total >= top_p) return std::max(thr, sorted[i]);
    }
  }
  return thr;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> sample_k_tokens_cpu(
    const at::Tensor& logits_in, const at::Tensor& labels_in, const at::Tensor& uniforms_in, double temperature,
    int64_t top_k, double top_p, int64_t ignore_index) {
  check_sampling_args(logits_in, labels_in, uniforms_in, temperature, top_k, top_p, at::kCPU);
  const auto logits = logits_in.contiguous();
  const auto labels = labels_in.to(at::kLong).contiguous();
  const auto uniforms = uniforms_in.to(at::kDouble).contiguous();
  const int64_t N = logits.size(0), V = logits.size(1), K = uniforms.size(1);
  {
    const int64_t* lab = labels.const_data_ptr<int64_t>();
    for (int64_t i = 0; i < N; ++i)
      TORCH_CHECK_INDEX(lab[i] == ignore_index || (lab[i] >= 0 && lab[i] < V), "labels[", i, "] = ", lab[i],
                        " is out of range for a vocabulary of ", V);
    const double* u = uniforms.const_data_ptr<double>();
    for (int64_t i = 0; i < N * K; ++i)
      TORCH_CHECK_VALUE(u[i] >= 0.0 && u[i] < 1.0, "uniforms must lie in [0, 1), got ", u[i]);
  }
  const auto fdt = logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto samples = at::empty({N, K}, logits.options().dtype(at::kLong));
  auto sample_logps = at::empty({N, K}, logits.options().dtype(fdt));
  auto label_logps = at::empty({N}, logits.options().dtype(fdt));
  auto lse_out = at::empty({N}, logits.options().dtype(fdt));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "sample_k_tokens_cpu", [&] {
    using A = acc_t<scalar_t>;
    const scalar_t* X = logits.const_data_ptr<scalar_t>();
    const int64_t* lab = labels.const_data_ptr<int64_t>();
    const double* U = uniforms.const_data_ptr<double>();
    int64_t* out_s = samples.data_ptr<int64_t>();
    A* out_lp = sample_logps.data_ptr<A>();
    A* out_ll = label_logps.data_ptr<A>();
    A* out_lse = lse_out.data_ptr<A>();
    const A inv_t = A(1.0 / temperature);
    const bool tempered = inv_t != A(1);
    const bool truncated = (top_k > 0 && top_k < V) || top_p < 1.0;
    at::parallel_for(0, N, std::max<int64_t>(1, 16384 / std::max<int64_t>(V, 1)), [&](int64_t begin, int64_t end) {
      const int64_t nt = num_tiles(V);
      std::vector<A> es(V), bt(kTile), bu(kTile), xs, sorted;
      std::vector<A> tmax(nt);
      std::vector<double> tmass(nt), target(K);
      std::vector<int64_t> order(K);
      for (int64_t r = begin; r < end; ++r) {
        const scalar_t* row = X + r * V;
        A thr = neg_inf<A>();
        if (truncated) {
          xs.resize(V);
          load_scaled<scalar_t, A>(row, xs.data(), V, inv_t);
          thr = truncation_threshold<A>(xs.data(), V, top_k, top_p, sorted);
        }
        OnlineLse<A> tempered_lse, plain_lse;
        const Vec<A> vthr(thr), zero(A(0));
        for (int64_t t0 = 0, t = 0; t0 < V; t0 += kTile, ++t) {
          const int64_t len = std::min(kTile, V - t0);
          load_scaled<scalar_t, A>(row + t0, bt.data(), len, inv_t);
          const A m = vec_max(bt.data(), len);
          A* e = es.data() + t0;
          const A s = vec_exp_sum(bt.data(), len, m, e);
          tmax[t] = m;
          tempered_lse.add(m, s);
          A mass = s;
          if (truncated) {  // drop the truncated tokens from the sampling mass (not from the lse)
            Vec<A> acc(A(0));
            A tail = 0;
            int64_t i = 0;
            for (; i + Vec<A>::size() <= len; i += Vec<A>::size()) {
              const Vec<A> kept = Vec<A>::blendv(zero, Vec<A>::loadu(e + i), Vec<A>::loadu(bt.data() + i) >= vthr);
              kept.store(e + i);
              acc += kept;
            }
            for (; i < len; ++i) {
              if (!(bt[i] >= thr)) e[i] = A(0);
              tail += e[i];
            }
            mass = tail + at::vec::vec_reduce_all<A>([](Vec<A>& a, Vec<A>& b) { return a + b; }, acc);
          }
          tmass[t] = double(mass);
          if (tempered) {
            load_scaled<scalar_t, A>(row + t0, bu.data(), len, A(1));
            const A mu = vec_max(bu.data(), len);
            plain_lse.add(mu, vec_exp_sum<A>(bu.data(), len, mu, nullptr));
          }
        }
        const A lse = tempered ? plain_lse.lse() : tempered_lse.lse();
        const double M = double(tempered_lse.m);
        double total = 0;
        for (int64_t t = 0; t < nt; ++t) {
          tmass[t] = tmass[t] > 0 ? tmass[t] * std::exp(double(tmax[t]) - M) : 0.0;
          total += tmass[t];
        }
        // the K uniforms, sorted, walk the CDF once; token = first v with cdf(v) > u * total
        const double* u = U + r * K;
        std::iota(order.begin(), order.end(), 0);
        std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return u[a] < u[b]; });
        for (int64_t k = 0; k < K; ++k) target[k] = u[order[k]] * total;
        int64_t k = 0;
        double acc = 0;
        for (int64_t t = 0, t0 = 0; t < nt && k < K; ++t, t0 += kTile) {
          if (acc + tmass[t] <= target[k]) {
            acc += tmass[t];
            continue;
          }
          const int64_t len = std::min(kTile, V - t0);
          const double f = tmass[t] > 0 ? std::exp(double(tmax[t]) - M) : 0.0;
          for (int64_t i = 0; i < len && k < K; ++i) {
            acc += double(es[t0 + i]) * f;
            while (k < K && acc > target[k]) out_s[r * K + order[k++]] = t0 + i;
          }
        }
        if (k < K) {  // rounding left u * total past the last kept token: take that token
          int64_t last = V - 1;
          while (last > 0 && !(es[last] > A(0))) --last;
          for (; k < K; ++k) out_s[r * K + order[k]] = last;
        }
        for (int64_t j = 0; j < K; ++j) out_lp[r * K + j] = static_cast<A>(row[out_s[r * K + j]]) - lse;
        out_lse[r] = lse;
        out_ll[r] = lab[r] == ignore_index ? A(0) : static_cast<A>(row[lab[r]]) - lse;
      }
    });
  });
  return {sample_logps, label_logps, lse_out, samples};
}

TORCH_LIBRARY_IMPL(posttrain, CPU, m) { m.impl("sample_k_tokens", &sample_k_tokens_cpu); }

}  // namespace posttrain::cpu
