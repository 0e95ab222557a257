// CUDA registration of speculative_verify: argument checks, then the raw kernel of speculative_verify.cu.
#include <torch/library.h>

#include "cuda/binding_utils.h"

namespace posttrain::cuda {
namespace {

VerifyMode parse_mode(c10::string_view mode) {
  if (mode == "sample") return VerifyMode::kSample;
  if (mode == "greedy") return VerifyMode::kGreedy;
  if (mode == "lenient") return VerifyMode::kLenient;
  TORCH_CHECK_VALUE(false, "mode must be one of sample, greedy, lenient; got ", mode);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> verify(const at::Tensor& tokens_in, const at::Tensor& q_in,
                                                      const at::Tensor& target_in, const at::Tensor& uniforms_in,
                                                      double temperature, c10::string_view mode_s, double lenience) {
  const VerifyMode mode = parse_mode(mode_s);
  PT_CHECK_DEVICE(target_in, at::kCUDA, "target_logits");
  PT_CHECK_FLOAT(target_in, "target_logits");
  PT_CHECK_DIM(target_in, 3, "target_logits");
  PT_CHECK_SAME_DEVICE(q_in, target_in, "draft_probs", "target_logits");
  PT_CHECK_FLOAT(q_in, "draft_probs");
  PT_CHECK_DIM(q_in, 3, "draft_probs");
  PT_CHECK_SAME_DEVICE(tokens_in, target_in, "draft_tokens", "target_logits");
  PT_CHECK_INDEX_DTYPE(tokens_in, "draft_tokens");
  PT_CHECK_DIM(tokens_in, 2, "draft_tokens");
  PT_CHECK_SAME_DEVICE(uniforms_in, target_in, "uniforms", "target_logits");
  TORCH_CHECK_TYPE(uniforms_in.scalar_type() == at::kFloat || uniforms_in.scalar_type() == at::kDouble,
                   "uniforms must be float32 or float64, got ", uniforms_in.scalar_type());
  PT_CHECK_DIM(uniforms_in, 2, "uniforms");
  const int64_t B = tokens_in.size(0), G = tokens_in.size(1), V = target_in.size(2);
  TORCH_CHECK_VALUE(target_in.size(0) == B && target_in.size(1) == G + 1,
                    "target_logits must have shape (B, gamma + 1, V), got ", target_in.sizes());
  TORCH_CHECK_VALUE(V > 0, "target_logits must have at least one vocabulary column");
  TORCH_CHECK_VALUE(q_in.size(0) == B && q_in.size(1) == G && q_in.size(2) == V,
                    "draft_probs must have shape (B, gamma, V), got ", q_in.sizes());
  TORCH_CHECK_VALUE(uniforms_in.size(0) == B && uniforms_in.size(1) == G + 1, "uniforms must have shape (B, gamma + 1)");
  if (mode != VerifyMode::kGreedy) PT_CHECK_TEMPERATURE(temperature);
  TORCH_CHECK_VALUE(lenience > 0 && lenience <= 1, "lenience must lie in (0, 1], got ", lenience);
  c10::cuda::CUDAGuard guard(target_in.device());
  const auto target = target_in.contiguous();
  const auto acc = acc_dtype(target);
  const auto q = q_in.to(acc).contiguous();
  const auto tokens = tokens_in.to(at::kLong).contiguous();
  const auto uniforms = uniforms_in.to(at::kDouble).contiguous();
  check_ids(tokens, V, "draft_tokens", c10::nullopt);
  check_uniforms(uniforms);
  auto expected = at::empty({B, G}, target.options().dtype(acc));
  auto out = at::full({B, G + 1}, -1, tokens.options());
  auto n = at::empty({B}, tokens.options());
  speculative_verify(dtype_of(target), mode, tokens.const_data_ptr<int64_t>(), q.const_data_ptr(),
                     target.const_data_ptr(), uniforms.const_data_ptr<double>(), B, G, V, temperature, lenience,
                     expected.data_ptr(), out.data_ptr<int64_t>(), n.data_ptr<int64_t>(), current_stream());
  return {expected, out, n};
}

}  // namespace

TORCH_LIBRARY_IMPL(posttrain, CUDA, m) { m.impl("speculative_verify", &verify); }

}  // namespace posttrain::cuda
