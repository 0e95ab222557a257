import pytest
import torch

from posttrain.ops import _backend

needs_ext = pytest.mark.skipif(_backend.extension() is None, reason="posttrain._C is not built")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(params=["torch", "ext"])
def backend(request):
    """Runs a test under each backend; the extension is built in CI, so 'ext' must not skip there."""
    if request.param == "ext" and _backend.extension() is None:
        pytest.skip("posttrain._C is not built")
    with _backend.force(request.param):
        yield request.param
