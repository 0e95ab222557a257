"""POSTTRAIN_OPS=auto keeps CUDA tensors on the torch references while the CUDA kernels are unverified."""
import logging

import pytest
import torch

from posttrain.ops import (
    _backend,
    lm_head_logprobs,
    sample_k_tokens,
    speculative_verify,
    token_divergence,
    token_logprobs,
)
from tests.ops.conftest import needs_ext

CUDA = torch.device("cuda")  # a device object needs no GPU; the decision is made on it before any kernel runs
GATE_MESSAGE = "CUDA tensors run the torch references"


@pytest.fixture
def fresh_gate(monkeypatch):
    monkeypatch.setattr(_backend, "_gate_logged", False)
    monkeypatch.delenv("POSTTRAIN_OPS", raising=False)


def _gate_records(caplog):
    return [r for r in caplog.records if GATE_MESSAGE in r.getMessage()]


@needs_ext
def test_auto_sends_cuda_to_the_reference_and_logs_once(fresh_gate, caplog):
    assert not _backend.CUDA_KERNELS_VERIFIED  # flip only with a passing GPU run (docs/kernels.md)
    with caplog.at_level(logging.WARNING, logger=_backend.__name__):
        assert not _backend.use_extension(CUDA)
        assert not _backend.use_extension(CUDA)
        assert not _backend.use_extension(torch.device("cuda", 1))
    records = _gate_records(caplog)
    assert len(records) == 1 and "POSTTRAIN_OPS=ext" in records[0].getMessage()


@needs_ext
def test_auto_keeps_the_cpu_kernels_and_fake_tensors(fresh_gate, caplog):
    with caplog.at_level(logging.WARNING, logger=_backend.__name__):
        assert _backend.use_extension(torch.device("cpu"))
        assert _backend.use_extension(torch.device("meta"))
        assert _backend.use_extension()
    assert not _gate_records(caplog)


@needs_ext
def test_environment_variable_selects_the_same_way(fresh_gate, monkeypatch):
    monkeypatch.setenv("POSTTRAIN_OPS", "auto")
    assert not _backend.use_extension(CUDA)
    monkeypatch.setenv("POSTTRAIN_OPS", "torch")
    assert not _backend.use_extension(torch.device("cpu"))


@needs_ext
def test_ext_opts_in_on_cuda(fresh_gate, monkeypatch, caplog):
    monkeypatch.setattr(_backend, "_cuda_kernels", True)  # as a CUDA build reports
    monkeypatch.setenv("POSTTRAIN_OPS", "ext")
    with caplog.at_level(logging.WARNING, logger=_backend.__name__):
        assert _backend.use_extension(CUDA)
    assert not _gate_records(caplog)


@needs_ext
def test_ext_on_cuda_without_cuda_kernels_says_so(fresh_gate, monkeypatch):
    monkeypatch.setattr(_backend, "_cuda_kernels", False)
    with _backend.force("ext"), pytest.raises(RuntimeError, match="without its CUDA kernels"):
        _backend.use_extension(CUDA)


@needs_ext
def test_verified_flag_lets_auto_use_the_cuda_kernels_of_a_cuda_build(fresh_gate, monkeypatch):
    monkeypatch.setattr(_backend, "CUDA_KERNELS_VERIFIED", True)
    monkeypatch.setattr(_backend, "_cuda_kernels", True)
    assert _backend.use_extension(CUDA)
    monkeypatch.setattr(_backend, "_cuda_kernels", False)  # a CPU-only build has no CUDA kernel to run
    assert not _backend.use_extension(CUDA)


def _calls():
    x = torch.randn(4, 9)
    y = torch.randint(0, 9, (4,))
    q = torch.softmax(torch.randn(2, 3, 9), -1)
    return {
        "token_logprobs": lambda: token_logprobs(x, y),
        "lm_head_logprobs": lambda: lm_head_logprobs(torch.randn(4, 5), torch.randn(9, 5), y),
        "token_divergence": lambda: token_divergence(x, torch.randn(4, 9), "forward_kl"),
        "sample_k_tokens": lambda: sample_k_tokens(x, y, 2),
        "speculative_verify": lambda: speculative_verify(torch.zeros(2, 3, dtype=torch.long), q, torch.randn(2, 4, 9)),
    }


@pytest.mark.parametrize("op", sorted(_calls()))
def test_every_public_op_asks_with_its_tensors_device(op, monkeypatch):
    asked = []
    monkeypatch.setattr(_backend, "use_extension", lambda device=None: asked.append(device) or False)
    _calls()[op]()  # runs the reference, since the recorder answers False
    assert asked == [torch.device("cpu")]


@needs_ext
def test_gate_traces_under_torch_compile(fresh_gate):
    f = torch.compile(lambda x: x + 1 if _backend.use_extension(CUDA) else x - 1, fullgraph=True, backend="eager")
    assert f(torch.zeros(1)).item() == -1
