import pytest
import torch

from lightning_modules.distillspec import gamma_list, speculative_summary
from posttrain.utils.config import ConfigError


def test_summary_by_hand():
    # target-only medians 2.0 s; γ=3 median 1.0 s (2x), γ=5 median 0.8 s (2.5x)
    times = {0: [2.0, 1.9, 2.2], 3: [1.0, 1.1, 0.9], 5: [0.8, 0.7, 0.9]}
    # accepted, decided, emitted tokens, target calls, Σ min(p, q)
    totals = {3: torch.tensor([6.0, 8.0, 10.0, 4.0, 5.0], dtype=torch.float64),
              5: torch.tensor([9.0, 12.0, 12.0, 3.0, 7.0], dtype=torch.float64)}
    m = speculative_summary("sample", times, totals)
    assert m["spec/sample_acceptance_rate"] == pytest.approx(15 / 20)  # pooled over both γ
    assert m["spec/sample_expected_acceptance"] == pytest.approx(12 / 20)
    assert m["spec/sample_tokens_per_call_g3"] == pytest.approx(2.5)
    assert m["spec/sample_tokens_per_call_g5"] == pytest.approx(4.0)
    assert m["spec/sample_speedup_g3"] == pytest.approx(2.0)
    assert m["spec/sample_speedup_g5"] == pytest.approx(2.5)
    assert m["spec/sample_speedup"] == pytest.approx(2.5) and m["spec/sample_best_gamma"] == 5.0
    assert m["spec/sample_tokens_per_call"] == pytest.approx(4.0)  # τ at the best γ
    greedy = speculative_summary("greedy", times, totals)
    assert "spec/greedy_expected_acceptance" not in greedy  # Σ min(p, q) of one-hot drafts is α itself


def test_gamma_list():
    assert gamma_list(4) == [4] and gamma_list([3, 5, 7]) == [3, 5, 7]
    for bad in (0, [], [3, 0]):
        with pytest.raises(ConfigError, match="method.speculative.gamma"):
            gamma_list(bad)
