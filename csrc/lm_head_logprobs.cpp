// The lm-head-fused log-probs are device-agnostic: row chunks of logits are formed with the backend's GEMM
// and reduced by posttrain::token_logprobs (whichever kernel the device has), so (N, V) never exists.
// Backward recomputes each chunk's logits at the forward's precision and accumulates dW in float32.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "checks.h"

namespace posttrain {
namespace {

// Rows per chunk so that one chunk of logits holds about 2^20 elements (4 MiB in float32).
int64_t chunk_rows(int64_t requested, int64_t N, int64_t V) {
  int64_t c = requested > 0 ? requested : std::max<int64_t>(1, (int64_t(1) << 20) / std::max<int64_t>(V, 1));
  return std::max<int64_t>(1, std::min(c, std::max<int64_t>(N, 1)));
}

void check_lm_head(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& labels) {
  PT_CHECK_FLOAT(hidden, "hidden");
  PT_CHECK_DIM(hidden, 2, "hidden");
  PT_CHECK_FLOAT(weight, "weight");
  PT_CHECK_DIM(weight, 2, "weight");
  TORCH_CHECK_TYPE(weight.scalar_type() == hidden.scalar_type(), "weight must have the dtype of hidden (",
                   hidden.scalar_type(), "), got ", weight.scalar_type());
  PT_CHECK_SAME_DEVICE(weight, hidden, "weight", "hidden");
  PT_CHECK_SIZE(weight, 1, hidden.size(1), "weight");
  PT_CHECK_SAME_DEVICE(labels, hidden, "labels", "hidden");
  PT_CHECK_INDEX_DTYPE(labels, "labels");
  PT_CHECK_DIM(labels, 1, "labels");
  PT_CHECK_SIZE(labels, 0, hidden.size(0), "labels");
}

using FwdFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, int64_t);
using BwdFn = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                         const at::Tensor&, int64_t);

}  // namespace

std::tuple<at::Tensor, at::Tensor> lm_head_logprobs(const at::Tensor& hidden, const at::Tensor& weight,
                                                    const at::Tensor& labels, int64_t ignore_index,
                                                    int64_t chunk_size) {
  check_lm_head(hidden, weight, labels);
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("posttrain::token_logprobs", "").typed<FwdFn>();
  const int64_t N = hidden.size(0), V = weight.size(0);
  const auto out_dtype = hidden.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto logp = at::empty({N}, hidden.options().dtype(out_dtype));
  auto lse = at::empty({N}, hidden.options().dtype(out_dtype));
  const int64_t C = chunk_rows(chunk_size, N, V);
  const auto wt = weight.t();
  for (int64_t r0 = 0; r0 < N; r0 += C) {
    const int64_t c = std::min(C, N - r0);
    const auto logits = at::matmul(hidden.narrow(0, r0, c), wt);  // (c, V) in the input dtype
    auto [lp, ls] = op.call(logits, labels.narrow(0, r0, c), ignore_index);
    logp.narrow(0, r0, c).copy_(lp);
    lse.narrow(0, r0, c).copy_(ls);
  }
  return {logp, lse};
}

std::tuple<at::Tensor, at::Tensor> lm_head_logprobs_backward(const at::Tensor& grad_logp, const at::Tensor& grad_lse,
                                                             const at::Tensor& hidden, const at::Tensor& weight,
                                                             const at::Tensor& labels, const at::Tensor& lse,
                                                             int64_t ignore_index, int64_t chunk_size) {
  check_lm_head(hidden, weight, labels);
  static auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("posttrain::token_logprobs_backward", "").typed<BwdFn>();
  const int64_t N = hidden.size(0), V = weight.size(0);
  const auto acc_dtype = hidden.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto grad_hidden = at::empty_like(hidden, at::MemoryFormat::Contiguous);
  auto grad_weight = at::zeros(weight.sizes(), weight.options().dtype(acc_dtype));  // fp32 accumulator across chunks
  const int64_t C = chunk_rows(chunk_size, N, V);
  const auto wt = weight.t();
  for (int64_t r0 = 0; r0 < N; r0 += C) {
    const int64_t c = std::min(C, N - r0);
    const auto h = hidden.narrow(0, r0, c);
    const auto logits = at::matmul(h, wt);  // (c, V): same precision as the forward
    const auto dlogits = op.call(grad_logp.narrow(0, r0, c), grad_lse.narrow(0, r0, c), logits,
                                 labels.narrow(0, r0, c), lse.narrow(0, r0, c), ignore_index);  // (c, V)
    grad_hidden.narrow(0, r0, c).copy_(at::matmul(dlogits, weight));
    grad_weight.addmm_(dlogits.t().to(acc_dtype), h.to(acc_dtype));
  }
  return {grad_hidden, grad_weight.to(weight.scalar_type())};
}

TORCH_LIBRARY_IMPL(posttrain, CompositeExplicitAutograd, m) {
  m.impl("lm_head_logprobs", &lm_head_logprobs);
  m.impl("lm_head_logprobs_backward", &lm_head_logprobs_backward);
}

}  // namespace posttrain
