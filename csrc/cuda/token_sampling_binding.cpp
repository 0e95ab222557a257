// CUDA registration of sample_k_tokens: argument checks, then the raw kernel of token_sampling.cu.
#include <torch/library.h>

#include "cuda/binding_utils.h"

namespace posttrain::cuda {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> sample(const at::Tensor& logits_in,
                                                                  const at::Tensor& labels_in,
                                                                  const at::Tensor& uniforms_in, double temperature,
                                                                  int64_t top_k, double top_p, int64_t ignore_index) {
  PT_CHECK_DEVICE(logits_in, at::kCUDA, "logits");
  PT_CHECK_FLOAT(logits_in, "logits");
  PT_CHECK_DIM(logits_in, 2, "logits");
  TORCH_CHECK_VALUE(logits_in.size(1) > 0 || logits_in.size(0) == 0, "logits must have at least one vocabulary column");
  PT_CHECK_SAME_DEVICE(labels_in, logits_in, "labels", "logits");
  PT_CHECK_INDEX_DTYPE(labels_in, "labels");
  PT_CHECK_DIM(labels_in, 1, "labels");
  PT_CHECK_SIZE(labels_in, 0, logits_in.size(0), "labels");
  PT_CHECK_SAME_DEVICE(uniforms_in, logits_in, "uniforms", "logits");
  TORCH_CHECK_TYPE(uniforms_in.scalar_type() == at::kFloat || uniforms_in.scalar_type() == at::kDouble,
                   "uniforms must be float32 or float64, got ", uniforms_in.scalar_type());
  PT_CHECK_DIM(uniforms_in, 2, "uniforms");
  PT_CHECK_SIZE(uniforms_in, 0, logits_in.size(0), "uniforms");
  PT_CHECK_TEMPERATURE(temperature);
  TORCH_CHECK_VALUE(top_k >= 0, "top_k must be >= 0 (0 disables it), got ", top_k);
  TORCH_CHECK_VALUE(top_p > 0 && top_p <= 1, "top_p must lie in (0, 1], got ", top_p);
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
