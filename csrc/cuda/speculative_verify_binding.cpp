// CUDA registration of speculative_verify: argument checks, then the raw kernel of speculative_verify.cu.
#include <torch/library.h>

#include "cuda/binding_utils.h"
#include "op_args.h"

namespace posttrain::cuda {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> verify(const at::Tensor& tokens_in, const at::Tensor& q_in,
                                                      const at::Tensor& target_in, const at::Tensor& uniforms_in,
                                                      double temperature, c10::string_view mode_s, double lenience) {
  const VerifyMode mode = parse_verify_mode(mode_s);
  check_verify_args(tokens_in, q_in, target_in, uniforms_in, temperature, mode, lenience, at::kCUDA);
  const int64_t B = tokens_in.size(0), G = tokens_in.size(1), V = target_in.size(2);
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
