// CUDA registration of token_logprobs: argument checks, then the raw kernels of token_logprobs.cu.
#include <torch/library.h>

#include "cuda/binding_utils.h"
#include "op_args.h"

namespace posttrain::cuda {
namespace {

std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& logits_in, const at::Tensor& labels_in,
                                           int64_t ignore_index) {
  check_logprob_args(logits_in, labels_in, at::kCUDA);
  c10::cuda::CUDAGuard guard(logits_in.device());
  const auto logits = logits_in.contiguous();
  const auto labels = labels_in.to(at::kLong).contiguous();
  const int64_t N = logits.size(0), V = logits.size(1);
  check_ids(labels, V, "labels", ignore_index);
  auto logp = at::empty({N}, logits.options().dtype(acc_dtype(logits)));
  auto lse = at::empty({N}, logits.options().dtype(acc_dtype(logits)));
  token_logprobs_forward(dtype_of(logits), logits.const_data_ptr(), labels.const_data_ptr<int64_t>(), N, V,
                         ignore_index, logp.data_ptr(), lse.data_ptr(), current_stream());
  return {logp, lse};
}

at::Tensor backward(const at::Tensor& grad_logp, const at::Tensor& grad_lse, const at::Tensor& logits_in,
                    const at::Tensor& labels_in, const at::Tensor& lse_in, int64_t ignore_index) {
  check_logprob_args(logits_in, labels_in, at::kCUDA);
  c10::cuda::CUDAGuard guard(logits_in.device());
  const auto acc = acc_dtype(logits_in);
  const auto logits = logits_in.contiguous();
  const auto labels = labels_in.to(at::kLong).contiguous();
  const auto g = grad_logp.to(acc).contiguous(), gl = grad_lse.to(acc).contiguous(), lse = lse_in.to(acc).contiguous();
  const int64_t N = logits.size(0), V = logits.size(1);
  for (auto* t : {&g, &gl, &lse}) PT_CHECK_SIZE(*t, 0, N, "grad/lse");
  auto out = at::empty({N, V}, logits.options());
  token_logprobs_backward(dtype_of(logits), g.const_data_ptr(), gl.const_data_ptr(), logits.const_data_ptr(),
                          labels.const_data_ptr<int64_t>(), lse.const_data_ptr(), N, V, ignore_index, out.data_ptr(),
                          current_stream());
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(posttrain, CUDA, m) {
  m.impl("token_logprobs", &forward);
  m.impl("token_logprobs_backward", &backward);
}

}  // namespace posttrain::cuda
