"""Builds posttrain._C: the CPU kernels always, the CUDA kernels when torch has CUDA and nvcc is found.

Install without build isolation so the extension is compiled against the installed torch:
    pip install --no-build-isolation -e .
"""
import glob
import os
import sys

import torch
from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

here = os.path.dirname(os.path.abspath(__file__))


def _sources(pattern):
    return sorted(os.path.relpath(p, here) for p in glob.glob(os.path.join(here, pattern)))


def _simd_flags():
    """ATen's Vectorized<float> is scalar unless CPU_CAPABILITY_* is defined: pick what the build machine runs.

    POSTTRAIN_CPU_CAPABILITY=default|avx2|avx512 overrides the probe (e.g. to build for an older fleet).
    """
    wanted = os.environ.get("POSTTRAIN_CPU_CAPABILITY", "").lower()
    if not wanted:
        try:
            flags = set(open("/proc/cpuinfo").read().split())
        except OSError:
            flags = set()
        if {"avx512f", "avx512bw", "avx512vl", "avx512dq", "fma"} <= flags:
            wanted = "avx512"
        elif {"avx2", "fma", "f16c"} <= flags:
            wanted = "avx2"
        else:
            wanted = "default"
    if wanted == "avx512":
        return ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX512",
                "-DCPU_CAPABILITY_AVX512"]
    if wanted == "avx2":
        return ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]
    return []


def _extension():
    cxx = ["-O3", "-std=c++20", "-fopenmp", "-DPOSTTRAIN_OPENMP"] + _simd_flags()
    if sys.platform == "darwin":  # Apple clang has no -fopenmp without libomp
        cxx = ["-O3", "-std=c++20"]
    sources = _sources("csrc/*.cpp") + _sources("csrc/cpu/*.cpp")
    use_cuda = torch.version.cuda is not None and CUDA_HOME is not None and os.environ.get("POSTTRAIN_NO_CUDA") != "1"
    if use_cuda:
        sources += _sources("csrc/cuda/*.cu") + _sources("csrc/cuda/*.cpp")
        return CUDAExtension(
            "posttrain._C",
            sources,
            include_dirs=[os.path.join(here, "csrc")],
            define_macros=[("POSTTRAIN_WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "--use_fast_math", "-std=c++17", "-lineinfo"]},
            extra_link_args=[] if sys.platform == "darwin" else ["-fopenmp"],
        )
    return CppExtension(
        "posttrain._C",
        sources,
        include_dirs=[os.path.join(here, "csrc")],
        extra_compile_args={"cxx": cxx},
        extra_link_args=[] if sys.platform == "darwin" else ["-fopenmp"],
    )


setup(ext_modules=[_extension()], cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)})
