// CUDA registration of sample_k_tokens: argument checks, then the raw kernel of token_sampling.cu.
#include <torch/library.h>

#include "cuda/binding_utils.h"
#include "op_args.h"

namespace posttrain::cuda {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> sample(const at::Tensor& logits_in,
                                                                  const at::Tensor& labels_in,
                                                                  const at::Tensor& uniforms_in, double temperature,
                                                                  int64_t top_k, double top_p, int64_t ignore_index) {
  check_sampling_args(logits_in, labels_in, uniforms_in, temperature, top_k, top_p, at::kCUDA);
  c10::cuda::CUDAGuard guard(logits_in.device());
  const auto logits = logits_in.contiguous();
  const auto labels = labels_in.to(at::kLong).contiguous();
  const auto uniforms = uniforms_in.to(at::kDouble).contiguous();
  const int64_t N = logits.size(0), V = logits.size(1), K = uniforms.size(1);
  check_ids(labels, V, "labels", ignore_index);
  check_uniforms(uniforms);
  const auto opts = logits.options().dtype(acc_dtype(logits));
  auto samples = at::empty({N, K}, logits.options().dtype(at::kLong));
  auto slp = at::empty({N, K}, opts), llp = at::empty({N}, opts), lse = at::empty({N}, opts);
  sample_k_tokens(dtype_of(logits), logits.const_data_ptr(), labels.const_data_ptr<int64_t>(),
                  uniforms.const_data_ptr<double>(), N, V, K, temperature, top_k, top_p, ignore_index,
                  samples.data_ptr<int64_t>(), slp.data_ptr(), llp.data_ptr(), lse.data_ptr(), current_stream());
  return {slp, llp, lse, samples};
}

}  // namespace

TORCH_LIBRARY_IMPL(posttrain, CUDA, m) { m.impl("sample_k_tokens", &sample); }

}  // namespace posttrain::cuda
