// Argument parsing and checks of each op, shared by its CPU kernel and its CUDA registration: one place decides
// what an op accepts and what its errors say; `device` is the backend the caller implements.
#pragma once
#include <ATen/ATen.h>

#include "checks.h"
#include "op_enums.h"

namespace posttrain {

inline DivKind parse_divergence_kind(c10::string_view kind) {
  if (kind == "forward_kl") return DivKind::kForwardKL;
  if (kind == "reverse_kl") return DivKind::kReverseKL;
  if (kind == "jsd") return DivKind::kJSD;
  if (kind == "tvd") return DivKind::kTVD;
  TORCH_CHECK_VALUE(false, "kind must be one of forward_kl, reverse_kl, jsd, tvd; got ", kind);
}

inline VerifyMode parse_verify_mode(c10::string_view mode) {
  if (mode == "sample") return VerifyMode::kSample;
  if (mode == "greedy") return VerifyMode::kGreedy;
  if (mode == "lenient") return VerifyMode::kLenient;
  TORCH_CHECK_VALUE(false, "mode must be one of sample, greedy, lenient; got ", mode);
}

// token_logprobs: logits (N, V) float, labels (N,) int.
inline void check_logprob_args(const at::Tensor& logits, const at::Tensor& labels, c10::DeviceType device) {
  PT_CHECK_DEVICE(logits, device, "logits");
  PT_CHECK_FLOAT(logits, "logits");
  PT_CHECK_DIM(logits, 2, "logits");
  PT_CHECK_SAME_DEVICE(labels, logits, "labels", "logits");
  PT_CHECK_INDEX_DTYPE(labels, "labels");
  PT_CHECK_DIM(labels, 1, "labels");
  PT_CHECK_SIZE(labels, 0, logits.size(0), "labels");
  TORCH_CHECK_VALUE(logits.size(1) > 0 || logits.size(0) == 0, "logits must have at least one vocabulary column");
}

// token_divergence: student and teacher logits (N, V) of one float dtype; beta in [0, 1]; temperature > 0.
inline void check_divergence_args(const at::Tensor& student, const at::Tensor& teacher, double beta,
                                  double temperature, c10::DeviceType device) {
  PT_CHECK_DEVICE(student, device, "student_logits");
  PT_CHECK_FLOAT(student, "student_logits");
  PT_CHECK_DIM(student, 2, "student_logits");
  PT_CHECK_SAME_DEVICE(teacher, student, "teacher_logits", "student_logits");
  PT_CHECK_FLOAT(teacher, "teacher_logits");
  TORCH_CHECK_TYPE(teacher.scalar_type() == student.scalar_type(), "teacher_logits must have the dtype of student_logits (",
                   student.scalar_type(), "), got ", teacher.scalar_type());
  TORCH_CHECK_VALUE(teacher.sizes() == student.sizes(), "teacher_logits must have the shape of student_logits ",
                    student.sizes(), ", got ", teacher.sizes());
  TORCH_CHECK_VALUE(student.size(1) > 0 || student.size(0) == 0, "student_logits must have at least one column");
  TORCH_CHECK_VALUE(beta >= 0 && beta <= 1, "beta must lie in [0, 1], got ", beta);
  PT_CHECK_TEMPERATURE(temperature);
}

inline void check_uniforms_args(const at::Tensor& uniforms, const at::Tensor& ref, const char* refname) {
  TORCH_CHECK_VALUE(uniforms.device() == ref.device(), "uniforms must be on the same device as ", refname, " (",
                    ref.device(), "), got ", uniforms.device());
  TORCH_CHECK_TYPE(uniforms.scalar_type() == at::kFloat || uniforms.scalar_type() == at::kDouble,
                   "uniforms must be float32 or float64, got ", uniforms.scalar_type());
  PT_CHECK_DIM(uniforms, 2, "uniforms");
}

// sample_k_tokens: logits (N, V), labels (N,), uniforms (N, K).
inline void check_sampling_args(const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& uniforms,
                                double temperature, int64_t top_k, double top_p, c10::DeviceType device) {
  check_logprob_args(logits, labels, device);
  check_uniforms_args(uniforms, logits, "logits");
  PT_CHECK_SIZE(uniforms, 0, logits.size(0), "uniforms");
  PT_CHECK_TEMPERATURE(temperature);
  TORCH_CHECK_VALUE(top_k >= 0, "top_k must be >= 0 (0 disables it), got ", top_k);
  TORCH_CHECK_VALUE(top_p > 0 && top_p <= 1, "top_p must lie in (0, 1], got ", top_p);
}

// speculative_verify: draft_tokens (B, γ), draft_probs (B, γ, V), target_logits (B, γ+1, V), uniforms (B, γ+1).
inline void check_verify_args(const at::Tensor& draft_tokens, const at::Tensor& draft_probs,
                              const at::Tensor& target_logits, const at::Tensor& uniforms, double temperature,
                              VerifyMode mode, double lenience, c10::DeviceType device) {
  PT_CHECK_DEVICE(target_logits, device, "target_logits");
  PT_CHECK_FLOAT(target_logits, "target_logits");
  PT_CHECK_DIM(target_logits, 3, "target_logits");
  PT_CHECK_SAME_DEVICE(draft_probs, target_logits, "draft_probs", "target_logits");
  PT_CHECK_FLOAT(draft_probs, "draft_probs");
  PT_CHECK_DIM(draft_probs, 3, "draft_probs");
  PT_CHECK_SAME_DEVICE(draft_tokens, target_logits, "draft_tokens", "target_logits");
  PT_CHECK_INDEX_DTYPE(draft_tokens, "draft_tokens");
  PT_CHECK_DIM(draft_tokens, 2, "draft_tokens");
  check_uniforms_args(uniforms, target_logits, "target_logits");
  const int64_t B = draft_tokens.size(0), G = draft_tokens.size(1), V = target_logits.size(2);
  TORCH_CHECK_VALUE(target_logits.size(0) == B && target_logits.size(1) == G + 1,
                    "target_logits must have shape (B, gamma + 1, V) = (", B, ", ", G + 1, ", V), got ",
                    target_logits.sizes());
  TORCH_CHECK_VALUE(V > 0, "target_logits must have at least one vocabulary column");
  TORCH_CHECK_VALUE(draft_probs.size(0) == B && draft_probs.size(1) == G && draft_probs.size(2) == V,
                    "draft_probs must have shape (B, gamma, V) = (", B, ", ", G, ", ", V, "), got ",
                    draft_probs.sizes());
  TORCH_CHECK_VALUE(uniforms.size(0) == B && uniforms.size(1) == G + 1, "uniforms must have shape (", B, ", ",
                    G + 1, "), got ", uniforms.sizes());
  if (mode != VerifyMode::kGreedy) PT_CHECK_TEMPERATURE(temperature);
  TORCH_CHECK_VALUE(lenience > 0 && lenience <= 1, "lenience must lie in (0, 1], got ", lenience);
}

}  // namespace posttrain
