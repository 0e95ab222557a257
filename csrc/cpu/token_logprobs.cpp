// Token log-probs on CPU: one online log-sum-exp read of each row forward; backward recomputes
// softmax from the saved lse instead of keeping an (N, V) log-softmax.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "op_args.h"
#include "cpu/row_math.h"

namespace posttrain::cpu {
namespace {

int64_t grain_rows(int64_t V) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(V, 1)); }

void check_labels_in_range(const at::Tensor& labels, int64_t V, int64_t ignore_index) {
  const int64_t* lab = labels.data_ptr<int64_t>();
  for (int64_t i = 0; i < labels.numel(); ++i) {
    TORCH_CHECK_INDEX(lab[i] == ignore_index || (lab[i] >= 0 && lab[i] < V), "labels[", i, "] = ", lab[i],
                      " is out of range for a vocabulary of ", V, " (ignore_index = ", ignore_index, ")");
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> token_logprobs_cpu(const at::Tensor& logits_in, const at::Tensor& labels_in,
                                                      int64_t ignore_index) {
  check_logprob_args(logits_in, labels_in, at::kCPU);
  const auto logits = logits_in.contiguous();
  const auto labels = labels_in.to(at::kLong).contiguous();
  const int64_t N = logits.size(0), V = logits.size(1);
  check_labels_in_range(labels, V, ignore_index);
  const auto out_dtype = logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto logp = at::empty({N}, logits.options().dtype(out_dtype));
  auto lse = at::empty({N}, logits.options().dtype(out_dtype));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "token_logprobs_cpu", [&] {
    using A = acc_t<scalar_t>;
    const scalar_t* x = logits.const_data_ptr<scalar_t>();
    const int64_t* lab = labels.const_data_ptr<int64_t>();
    A* lp = logp.data_ptr<A>();
    A* ls = lse.data_ptr<A>();
    at::parallel_for(0, N, grain_rows(V), [&](int64_t begin, int64_t end) {
      std::vector<A> tile(kTile);
      for (int64_t r = begin; r < end; ++r) {
        const scalar_t* row = x + r * V;
        const A l = row_lse<scalar_t, A>(row, V, A(1), tile.data());
        ls[r] = l;
        lp[r] = lab[r] == ignore_index ? A(0) : static_cast<A>(row[lab[r]]) - l;
      }
    });
  });
  return {logp, lse};
}

// grad_logits = g * (onehot(label) - softmax) + g_lse * softmax, with g = 0 on ignored rows.
at::Tensor token_logprobs_backward_cpu(const at::Tensor& grad_logp_in, const at::Tensor& grad_lse_in,
                                       const at::Tensor& logits_in, const at::Tensor& labels_in,
                                       const at::Tensor& lse_in, int64_t ignore_index) {
  check_logprob_args(logits_in, labels_in, at::kCPU);
  const int64_t N = logits_in.size(0), V = logits_in.size(1);
  const auto acc_dtype = logits_in.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  for (auto* t : {&grad_logp_in, &grad_lse_in, &lse_in}) {
    PT_CHECK_DIM(*t, 1, "grad/lse");
    PT_CHECK_SIZE(*t, 0, N, "grad/lse");
    PT_CHECK_SAME_DEVICE(*t, logits_in, "grad/lse", "logits");
  }
  const auto logits = logits_in.contiguous();
  const auto labels = labels_in.to(at::kLong).contiguous();
  const auto g = grad_logp_in.to(acc_dtype).contiguous();
  const auto gl = grad_lse_in.to(acc_dtype).contiguous();
  const auto lse = lse_in.to(acc_dtype).contiguous();
  check_labels_in_range(labels, V, ignore_index);
  auto grad = at::empty({N, V}, logits.options());
  advise_huge_pages(grad.data_ptr(), grad.nbytes());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "token_logprobs_backward_cpu", [&] {
    using A = acc_t<scalar_t>;
    using Vec = at::vec::Vectorized<A>;
    const scalar_t* x = logits.const_data_ptr<scalar_t>();
    const int64_t* lab = labels.const_data_ptr<int64_t>();
    const A* gp = g.const_data_ptr<A>();
    const A* gls = gl.const_data_ptr<A>();
    const A* ls = lse.const_data_ptr<A>();
    scalar_t* out = grad.data_ptr<scalar_t>();
    at::parallel_for(0, N, grain_rows(V), [&](int64_t begin, int64_t end) {
      std::vector<A> tile(kTile);
      for (int64_t r = begin; r < end; ++r) {
        const bool ignored = lab[r] == ignore_index;
        const A gr = ignored ? A(0) : gp[r];
        const A coef = gls[r] - gr;
        scalar_t* orow = out + r * V;
        if (coef == A(0) && gr == A(0)) {
          std::fill(orow, orow + V, scalar_t(0));
          continue;
        }
        const Vec vl(ls[r]), vc(coef);
        for (int64_t t0 = 0; t0 < V; t0 += kTile) {
          const int64_t len = std::min(kTile, V - t0);
          A* b = tile.data();
          load_scaled<scalar_t, A>(x + r * V + t0, b, len, A(1));
          int64_t i = 0;
          for (; i + Vec::size() <= len; i += Vec::size()) ((Vec::loadu(b + i) - vl).exp() * vc).store(b + i);
          for (; i < len; ++i) b[i] = std::exp(b[i] - ls[r]) * coef;
          if (!ignored && lab[r] >= t0 && lab[r] < t0 + len) b[lab[r] - t0] += gr;
          store_from_acc<scalar_t, A>(b, orow + t0, len);
        }
      }
    });
  });
  return grad;
}

TORCH_LIBRARY_IMPL(posttrain, CPU, m) {
  m.impl("token_logprobs", &token_logprobs_cpu);
  m.impl("token_logprobs_backward", &token_logprobs_backward_cpu);
}

}  // namespace posttrain::cpu
