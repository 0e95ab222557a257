// Shared by the torch-facing CUDA registrations (compiled only by a CUDA build of torch).
#pragma once
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "checks.h"
#include "cuda/launchers.h"

namespace posttrain::cuda {

inline DType dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::kFloat32;
    case at::kBFloat16: return DType::kBFloat16;
    case at::kHalf: return DType::kFloat16;
    case at::kDouble: return DType::kFloat64;
    default: TORCH_CHECK_TYPE(false, "unsupported dtype ", t.scalar_type());
  }
}

inline at::ScalarType acc_dtype(const at::Tensor& t) { return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

// One device sync: ids outside [0, V) (other than ignore_index) raise instead of reading out of bounds.
inline void check_ids(const at::Tensor& ids, int64_t V, const char* name, c10::optional<int64_t> ignore_index) {
  if (ids.numel() == 0) return;
  auto ok = (ids >= 0) & (ids < V);
  if (ignore_index) ok = ok | (ids == *ignore_index);
  TORCH_CHECK_INDEX(ok.all().item<bool>(), name, " holds a value out of range for a vocabulary of ", V);
}

inline void check_uniforms(const at::Tensor& u) {
  if (u.numel() == 0) return;
  TORCH_CHECK_VALUE(((u >= 0) & (u < 1)).all().item<bool>(), "uniforms must lie in [0, 1)");
}

}  // namespace posttrain::cuda
