"""`experiment=aidsafe agent=hf agent.name_or_path=DIR`: every agent role played by a tiny saved chat model through
the same pipeline; its unusable replies are recorded in the data, and every stage still runs."""
import json

import pytest

from posttrain.pipeline import train
from posttrain.utils.config import ConfigError
from tests.agents.tiny_chat import save_tiny_chat_model
from tests.helpers import compose_config
from tests.test_configs import STAGES

SHORT = [f"stages.{s}.method.max_new_tokens=12" for s in ("generate", "generate_unrefined", "generate_single")]


def test_the_experiment_runs_with_a_local_chat_model(tmp_path):
    directory = save_tiny_chat_model(tmp_path / "chat", max_positions=512)
    cfg = compose_config(["experiment=aidsafe", "debug=tiny", *STAGES["aidsafe"], "agent=hf",
                          f"agent.name_or_path={directory}", *SHORT], tmp_path)  # STAGES keeps tied pairs
    result = train(cfg)
    records = [json.loads(line) for line in open(result["stages"]["generate"].output)]
    assert len(records) == 8 and all(r["deliberation_log"] for r in records)
    log = json.loads(records[0]["deliberation_log"])
    assert log[0]["stage"] == "intent decomposition" and log[0]["completion_tokens"] > 0
    assert sum(r["errors"] for r in records) > 0  # a random model's replies are unusable: recorded, not raised
    agent = result["stages"]["generate"].module.agent
    assert agent.usage.calls >= 8 * 3 and agent.usage.completion_tokens > 0 and agent.truncated > 0
    assert {"heldout/safe_rate", "benign/over_refusal"} <= set(result["module"].eval_history[-1])


def config_error(cfg) -> ConfigError | None:
    """The ConfigError a run of `cfg` stops with, through whatever wraps it."""
    with pytest.raises(Exception) as error:
        train(cfg)
    cause = error.value
    while cause is not None and not isinstance(cause, ConfigError):
        cause = cause.__cause__
    return cause


def test_missing_agent_settings_name_the_key(tmp_path):
    cause = config_error(compose_config(["experiment=aidsafe", "agent=hf"], tmp_path))
    assert cause is not None and str(cause).startswith("agent.name_or_path: required")
    cause = config_error(compose_config(["experiment=aidsafe", "policies=[/nonexistent/p1.txt]"], tmp_path / "bad"))
    assert cause is not None and str(cause).startswith("policies[0]: policy file '/nonexistent/p1.txt' does not exist")
