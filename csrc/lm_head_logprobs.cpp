// The lm-head-fused log-probs are device-agnostic: blocks of logits (rows x vocabulary chunk) are formed with the
// backend's GEMM and reduced by posttrain::token_logprobs (whichever kernel the device has), combining the chunks'
// log-sum-exps online, so (N, V) never exists. Backward recomputes each block at the forward's precision and
// accumulates dW and dh in float32.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <limits>

#include "checks.h"

namespace posttrain {
namespace {

// Row blocks keep the GEMM's M dimension large; vocabulary chunks bound the logits block to about 2^20 elements
// (4 MiB in float32), so no (N, V) tensor exists in any dtype.
constexpr int64_t kRowBlock = 4096;
constexpr int64_t kChunkElems = int64_t(1) << 20;

int64_t vocab_chunk(int64_t requested, int64_t rows, int64_t V) {
  const int64_t c = requested > 0 ? requested : std::max<int64_t>(256, kChunkElems / std::max<int64_t>(rows, 1));
  return std::max<int64_t>(1, std::min(c, V));
}

void check_lm_head(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& labels, int64_t ignore_index) {
  PT_CHECK_FLOAT(hidden, "hidden");
  PT_CHECK_DIM(hidden, 2, "hidden");
  PT_CHECK_FLOAT(weight, "weight");
  PT_CHECK_DIM(weight, 2, "weight");
  TORCH_CHECK_TYPE(weight.scalar_type() == hidden.scalar_type(), "weight must have the dtype of hidden (",
                   hidden.scalar_type(), "), got ", weight.scalar_type());
  PT_CHECK_SAME_DEVICE(weight, hidden, "weight", "hidden");
  PT_CHECK_SIZE(weight, 1, hidden.size(1), "weight");
  TORCH_CHECK_VALUE(weight.size(0) > 0, "weight must have at least one vocabulary row");
  PT_CHECK_SAME_DEVICE(labels, hidden, "labels", "hidden");
  PT_CHECK_INDEX_DTYPE(labels, "labels");
  PT_CHECK_DIM(labels, 1, "labels");
  PT_CHECK_SIZE(labels, 0, hidden.size(0), "labels");
  if (labels.numel() > 0) {
    const auto ok = ((labels == ignore_index) | ((labels >= 0) & (labels < weight.size(0)))).all();
    TORCH_CHECK_INDEX(ok.item<bool>(), "labels hold a value out of range for a vocabulary of ", weight.size(0),
                      " (ignore_index = ", ignore_index, ")");
  }
}

using FwdFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, int64_t);
using BwdFn = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                         const at::Tensor&, int64_t);

}  // namespace

std::tuple<at::Tensor, at::Tensor> lm_head_logprobs(const at::Tensor& hidden, const at::Tensor& weight,
                                                    const at::Tensor& labels_in, int64_t ignore_index,
                                                    int64_t chunk_size) {
  check_lm_head(hidden, weight, labels_in, ignore_index);
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("posttrain::token_logprobs", "").typed<FwdFn>();
  const int64_t N = hidden.size(0), V = weight.size(0);
  const auto acc = hidden.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const auto labels = labels_in.to(at::kLong);
  auto logp = at::empty({N}, hidden.options().dtype(acc));
  auto lse = at::empty({N}, hidden.options().dtype(acc));
  for (int64_t r0 = 0; r0 < N; r0 += kRowBlock) {
    const int64_t c = std::min(kRowBlock, N - r0);
    const auto h = hidden.narrow(0, r0, c);
    const auto lab = labels.narrow(0, r0, c);
    const auto valid = lab != ignore_index;
    const auto none = at::full({c}, ignore_index, lab.options());  // lse only from each chunk
    auto run_lse = at::full({c}, -std::numeric_limits<double>::infinity(), hidden.options().dtype(acc));
    auto picked = at::zeros({c}, hidden.options().dtype(acc));
    const int64_t vc = vocab_chunk(chunk_size, c, V);
    for (int64_t v0 = 0; v0 < V; v0 += vc) {
      const int64_t n = std::min(vc, V - v0);
      const auto logits = at::matmul(h, weight.narrow(0, v0, n).t());  // (c, n) in the input dtype
      run_lse = at::logaddexp(run_lse, std::get<1>(op.call(logits, none, ignore_index)));
      const auto in = valid & (lab >= v0) & (lab < v0 + n);
      const auto col = (lab - v0).clamp(0, n - 1).unsqueeze(1);
      picked = picked + at::where(in, logits.gather(1, col).squeeze(1).to(acc), 0.0);
    }
    logp.narrow(0, r0, c).copy_(at::where(valid, picked - run_lse, 0.0));
    lse.narrow(0, r0, c).copy_(run_lse);
  }
  return {logp, lse};
}

std::tuple<at::Tensor, at::Tensor> lm_head_logprobs_backward(const at::Tensor& grad_logp, const at::Tensor& grad_lse,
                                                             const at::Tensor& hidden, const at::Tensor& weight,
                                                             const at::Tensor& labels_in, const at::Tensor& lse,
                                                             int64_t ignore_index, int64_t chunk_size) {
  check_lm_head(hidden, weight, labels_in, ignore_index);
  static auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("posttrain::token_logprobs_backward", "").typed<BwdFn>();
  const int64_t N = hidden.size(0), V = weight.size(0);
  const auto acc = hidden.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const auto labels = labels_in.to(at::kLong);
  auto grad_hidden = at::empty(hidden.sizes(), hidden.options());
  // float32 accumulators: bf16 sums across row blocks and vocabulary chunks would lose the small terms
  auto grad_weight = at::zeros(weight.sizes(), weight.options().dtype(acc));
  for (int64_t r0 = 0; r0 < N; r0 += kRowBlock) {
    const int64_t c = std::min(kRowBlock, N - r0);
    const auto h = hidden.narrow(0, r0, c);
    const auto h_acc = h.to(acc);
    const auto lab = labels.narrow(0, r0, c);
    const auto valid = lab != ignore_index;
    const auto g = at::where(valid, grad_logp.narrow(0, r0, c).to(acc), 0.0);
    // every chunk gets softmax * (g_lse - g); the one-hot g lands only in the chunk holding the label
    const auto coef = grad_lse.narrow(0, r0, c).to(acc) - g;
    const auto zero = at::zeros({c}, g.options());
    const auto none = at::full({c}, ignore_index, lab.options());
    const auto lse_c = lse.narrow(0, r0, c);
    auto gh = at::zeros({c, hidden.size(1)}, hidden.options().dtype(acc));
    const int64_t vc = vocab_chunk(chunk_size, c, V);
    for (int64_t v0 = 0; v0 < V; v0 += vc) {
      const int64_t n = std::min(vc, V - v0);
      const auto w = weight.narrow(0, v0, n);
      const auto logits = at::matmul(h, w.t());  // (c, n): recomputed at the forward's precision
      auto d = op.call(zero, coef, logits, none, lse_c, ignore_index).to(acc);  // (c, n)
      const auto in = (valid & (lab >= v0) & (lab < v0 + n)).nonzero().squeeze(1);
      if (in.numel() > 0) d.index_put_({in, lab.index_select(0, in) - v0}, g.index_select(0, in), true);
      gh.add_(at::matmul(d.to(hidden.scalar_type()), w).to(acc));
      grad_weight.narrow(0, v0, n).addmm_(d.t(), h_acc);
    }
    grad_hidden.narrow(0, r0, c).copy_(gh);
  }
  return {grad_hidden, grad_weight.to(weight.scalar_type())};
}

TORCH_LIBRARY_IMPL(posttrain, CompositeExplicitAutograd, m) {
  m.impl("lm_head_logprobs", &lm_head_logprobs);
  m.impl("lm_head_logprobs_backward", &lm_head_logprobs_backward);
}

}  // namespace posttrain
