// CUDA registration of token_divergence: argument checks, then the raw kernels of token_divergence.cu.
#include <torch/library.h>

#include "cuda/binding_utils.h"

namespace posttrain::cuda {
namespace {

DivKind parse_kind(c10::string_view kind) {
  if (kind == "forward_kl") return DivKind::kForwardKL;
  if (kind == "reverse_kl") return DivKind::kReverseKL;
  if (kind == "jsd") return DivKind::kJSD;
  if (kind == "tvd") return DivKind::kTVD;
  TORCH_CHECK_VALUE(false, "kind must be one of forward_kl, reverse_kl, jsd, tvd; got ", kind);
}

void check(const at::Tensor& s, const at::Tensor& t, double beta, double temperature) {
  PT_CHECK_DEVICE(s, at::kCUDA, "student_logits");
  PT_CHECK_FLOAT(s, "student_logits");
  PT_CHECK_DIM(s, 2, "student_logits");
  PT_CHECK_SAME_DEVICE(t, s, "teacher_logits", "student_logits");
  TORCH_CHECK_TYPE(t.scalar_type() == s.scalar_type(), "teacher_logits must have the dtype of student_logits");
  TORCH_CHECK_VALUE(t.sizes() == s.sizes(), "teacher_logits must have the shape of student_logits ", s.sizes(),
                    ", got ", t.sizes());
  TORCH_CHECK_VALUE(s.size(1) > 0 || s.size(0) == 0, "student_logits must have at least one column");
  TORCH_CHECK_VALUE(beta >= 0 && beta <= 1, "beta must lie in [0, 1], got ", beta);
  PT_CHECK_TEMPERATURE(temperature);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward(const at::Tensor& s_in, const at::Tensor& t_in,
                                                                   c10::string_view kind, double beta,
                                                                   double temperature) {
  check(s_in, t_in, beta, temperature);
  const DivKind k = parse_kind(kind);
  c10::cuda::CUDAGuard guard(s_in.device());
  const auto s = s_in.contiguous(), t = t_in.contiguous();
  const int64_t N = s.size(0), V = s.size(1);
  const auto opts = s.options().dtype(acc_dtype(s));
  auto div = at::empty({N}, opts), ls = at::empty({N}, opts), lt = at::empty({N}, opts), aux = at::empty({N}, opts);
  token_divergence_forward(dtype_of(s), k, s.const_data_ptr(), t.const_data_ptr(), N, V, beta, temperature,
                           div.data_ptr(), ls.data_ptr(), lt.data_ptr(), aux.data_ptr(), current_stream());
  return {div, ls, lt, aux};
}

at::Tensor backward(const at::Tensor& grad, const at::Tensor& s_in, const at::Tensor& t_in, const at::Tensor& ls_in,
                    const at::Tensor& lt_in, const at::Tensor& aux_in, c10::string_view kind, double beta,
                    double temperature) {
  check(s_in, t_in, beta, temperature);
  const DivKind k = parse_kind(kind);
  c10::cuda::CUDAGuard guard(s_in.device());
  const auto acc = acc_dtype(s_in);
  const auto s = s_in.contiguous(), t = t_in.contiguous();
  const auto g = grad.to(acc).contiguous(), ls = ls_in.to(acc).contiguous(), lt = lt_in.to(acc).contiguous(),
             aux = aux_in.to(acc).contiguous();
  const int64_t N = s.size(0), V = s.size(1);
  for (auto* x : {&g, &ls, &lt, &aux}) PT_CHECK_SIZE(*x, 0, N, "grad/lse/aux");
  auto out = at::empty({N, V}, s.options());
  token_divergence_backward(dtype_of(s), k, g.const_data_ptr(), s.const_data_ptr(), t.const_data_ptr(),
                            ls.const_data_ptr(), lt.const_data_ptr(), aux.const_data_ptr(), N, V, beta, temperature,
                            out.data_ptr(), current_stream());
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(posttrain, CUDA, m) {
  m.impl("token_divergence", &forward);
  m.impl("token_divergence_backward", &backward);
}

}  // namespace posttrain::cuda
