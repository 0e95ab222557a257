// Argument checks shared by every op: each failure names the argument and raises a Python exception.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#define PT_CHECK_FLOAT(x, name)                                                                          \
  TORCH_CHECK_TYPE((x).scalar_type() == at::kFloat || (x).scalar_type() == at::kBFloat16 ||             \
                       (x).scalar_type() == at::kHalf || (x).scalar_type() == at::kDouble,             \
                   name " must be float32, bfloat16, float16 or float64, got ", (x).scalar_type())

#define PT_CHECK_DTYPE(x, dtype, name) \
  TORCH_CHECK_TYPE((x).scalar_type() == (dtype), name " must be ", dtype, ", got ", (x).scalar_type())

#define PT_CHECK_INDEX_DTYPE(x, name)                                                               \
  TORCH_CHECK_TYPE((x).scalar_type() == at::kLong || (x).scalar_type() == at::kInt, name            \
                   " must be int64 or int32, got ", (x).scalar_type())

#define PT_CHECK_DIM(x, d, name) \
  TORCH_CHECK_VALUE((x).dim() == (d), name " must have ", d, " dimensions, got shape ", (x).sizes())

#define PT_CHECK_SIZE(x, dim, n, name)                                                                \
  TORCH_CHECK_VALUE((x).size(dim) == (n), name " must have size ", n, " in dimension ", dim, ", got shape ", \
                    (x).sizes())

#define PT_CHECK_SAME_DEVICE(x, ref, name, refname)                                                \
  TORCH_CHECK_VALUE((x).device() == (ref).device(), name " must be on the same device as " refname \
                    " (", (ref).device(), "), got ", (x).device())

#define PT_CHECK_DEVICE(x, dev, name) \
  TORCH_CHECK_VALUE((x).device().type() == (dev), name " must be a ", dev, " tensor, got ", (x).device())

#define PT_CHECK_CONTIGUOUS(x, name) TORCH_CHECK_VALUE((x).is_contiguous(), name " must be contiguous")

#define PT_CHECK_TEMPERATURE(t) \
  TORCH_CHECK_VALUE(std::isfinite(t) && (t) > 0, "temperature must be a finite positive number, got ", t)
