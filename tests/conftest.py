"""Shared across the suite: the closed-loop evaluator's idle environments do not outlive the test that made them
(the pool is process-wide, and tests swap registered environment classes)."""
import sys

import pytest


@pytest.fixture(autouse=True)
def no_idle_environments():
    yield
    evaluator = sys.modules.get("posttrain.vla.evaluator")
    if evaluator is not None:
        evaluator.close_idle_envs()
