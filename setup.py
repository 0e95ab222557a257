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


def _extension():
    cxx = ["-O3", "-std=c++17", "-fopenmp", "-DPOSTTRAIN_OPENMP"]
    if sys.platform == "darwin":  # Apple clang has no -fopenmp without libomp
        cxx = ["-O3", "-std=c++17"]
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
