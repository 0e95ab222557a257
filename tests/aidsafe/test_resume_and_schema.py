"""The deliberation stage resumes after a kill without redoing finished prompts, and writes the AIDSAFE schema."""
import json

import datasets
import pytest

from lightning_modules.aidsafe import DeliberationModule
from posttrain.agents import ScriptedChatModel
from posttrain.aidsafe.responder import SafetyWorldAgents
from posttrain.models import tiny_llama
from posttrain.pipeline.outputs import write_dataset

QUERIES = ["poison and bake", "poem", "scam and garden pls", "roleplay: hack", "sum and travel", "stab"]
BATCHES = [QUERIES[:2], QUERIES[2:4], QUERIES[4:]]


class Killed(Exception):
    """Stands for the process being killed (not a ValueError, so nothing records it as a failed reply)."""


class CountingAgents(SafetyWorldAgents):
    def __init__(self, kill_after: int | None = None):
        super().__init__()
        self.queries, self.kill_after = [], kill_after

    def respond(self, messages, rng):
        if self.kill_after is not None and len(self.queries) >= self.kill_after:
            raise Killed
        self.queries.append(messages[-1]["content"].split("### QUERY\n")[1].split("\n")[0])
        return super().respond(messages, rng)


def module(agents, progress_dir):
    model, tokenizer = tiny_llama(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    return DeliberationModule(model, tokenizer, agent=ScriptedChatModel(agents), budget=2, quality_budgets=[0, 1],
                              progress_dir=str(progress_dir))


def predict(stage, batches=BATCHES) -> list[dict]:
    stage.on_predict_start()
    records = [r for i, queries in enumerate(batches)
               for r in stage.predict_step({"examples": [{"prompt": q} for q in queries]}, i)]
    stage.on_predict_epoch_end()
    return records


def test_a_killed_run_resumes_without_redoing_finished_prompts(tmp_path):
    reference = predict(module(CountingAgents(), tmp_path / "reference"))
    killed_agents = CountingAgents(kill_after=12)  # the second batch is cut short
    with pytest.raises(Killed):
        predict(module(killed_agents, tmp_path / "run"))
    again_agents = CountingAgents()
    again = module(again_agents, tmp_path / "run")
    assert predict(again) == reference
    assert not set(again_agents.queries) & set(BATCHES[0])  # the finished batch was read back, not redone
    assert set(again_agents.queries) == set(QUERIES[2:])
    assert again.resumed == 1 and again.dataset_metrics["data/resumed_batches"] == 1.0
    other = module(CountingAgents(), tmp_path / "run")
    other.settings.budget = 1  # other settings: another progress file, nothing reused
    other.settings.quality_budgets = (0,)
    predict(other)
    assert other.resumed == 0


def test_the_dataset_is_in_the_published_schema_and_loads_with_datasets(tmp_path):
    stage = module(CountingAgents(), tmp_path)
    records = predict(stage)
    path = write_dataset(records, str(tmp_path / "out"))
    data = datasets.load_dataset("json", data_files=path, split="train")
    assert {"prompt", "refined_thoughts", "response", "deliberation_log"} <= set(data.column_names)
    assert data["prompt"] == QUERIES
    log = json.loads(data[0]["deliberation_log"])
    assert [e["stage"] for e in log][:2] == ["intent decomposition", "initial thoughts"]
    assert log[-1]["stage"] == "refinement" and all("reply" in e and "error" in e for e in log)
    assert data[0]["sft_target"].startswith("THINK: ") and "\nANSWER: " in data[0]["sft_target"]
    assert set(stage.dataset_metrics) >= {"b0/faithfulness", "b1/faithfulness_raw", "data/redundancy_raw",
                                          "data/deceptive_rate", "data/rounds"}
