"""experiment=cipher end to end: the scripted world through the pipeline (table, logs, curves), and the same
interaction with the run's own language model as agent, user and encoder (the LLM path)."""
import glob
import json
import os

from omegaconf import OmegaConf, open_dict

from posttrain.pipeline import train
from tests.helpers import compose_config

SMALL = ["experiment=cipher", "data.rounds=20", "data.seeds=[0,1]"]


def test_the_scripted_experiment_prints_the_table_and_writes_logs_curves_and_the_dataset(tmp_path, capsys):
    cfg = compose_config(SMALL, tmp_path)
    result = train(cfg)
    printed = capsys.readouterr().out
    assert "PRELUDE: cumulative edit cost over 20 rounds, 2 seed(s)" in printed and "cipher_5 " in printed
    agents = list(cfg.method.agents)
    row = result["rows"][-1]
    assert row["dataset/examples"] == 20 * 2 * len(agents)
    assert row["cost/oracle"] == 0 and row["cost/no_learning"] > row["cost/cipher_1"]
    logs = os.path.join(str(tmp_path), "prelude")
    assert sorted(os.listdir(os.path.join(logs, "seed1"))) == sorted(f"{a}.jsonl" for a in agents)
    summary = json.load(open(os.path.join(logs, "summary.json")))
    assert set(summary) == set(agents) and summary["oracle"]["exact"] == 1.0
    assert os.path.getsize(os.path.join(logs, "cumulative_cost.png")) > 1000
    assert glob.glob(os.path.join(str(tmp_path), "**", "events.out.tfevents.*"), recursive=True)
    with open(result["stages"]["main"].output) as handle:
        first = json.loads(handle.readline())
    assert {"context", "preference", "output", "edited", "cost", "stored", "agent_prompt_tokens"} <= set(first)


def test_the_run_model_as_agent_user_and_encoder(tmp_path):
    cfg = compose_config([*SMALL, "data.rounds=2", "data.seeds=[0]", "method.agent=policy", "method.user=policy",
                          "method.encoder.type=policy", "method.max_new_tokens=6"], tmp_path)
    with open_dict(cfg):
        cfg.method.agents = OmegaConf.create({"cipher_5": {"kind": "cipher", "k": 5},
                                              "cot_edit_5": {"kind": "cot_edit", "k": 5}})
    rows = [json.loads(line) for line in open(train(cfg)["stages"]["main"].output)]
    assert [(r["agent"], r["round"]) for r in rows] == [("cipher_5", 0), ("cipher_5", 1), ("cot_edit_5", 0),
                                                       ("cot_edit_5", 1)]
    for row in rows:
        assert row["agent_prompt_tokens"] > 0 and 0 < row["agent_completion_tokens"] <= 6 * 3
        assert row["user_prompt_tokens"] > 0 and row["user_completion_tokens"] > 0


def test_a_rerun_on_the_same_log_folder_resumes_each_agents_log(tmp_path):
    """An experiment killed part-way (here: one log cut to its first 3 rounds) finishes on rerun as if uninterrupted,
    playing only the missing rounds."""
    overrides = ["experiment=cipher", "data.rounds=8", "data.seeds=[0]", "scripted.noise=0.3",
                 f"method.log_dir={tmp_path}/logs"]

    def run(directory):
        cfg = compose_config(overrides, tmp_path / directory)
        with open_dict(cfg):
            cfg.method.agents = OmegaConf.create({"cipher_5": {"kind": "cipher", "k": 5}})
        result = train(cfg)
        return [json.loads(line) for line in open(result["stages"]["main"].output)], result["module"]

    whole, _ = run("first")
    log = tmp_path / "logs" / "seed0" / "cipher_5.jsonl"
    log.write_text("".join(log.read_text().splitlines(keepends=True)[:3]))
    resumed, module = run("again")
    assert resumed == whole
    assert module.agent_llm.usage.calls < 2 * 8  # only rounds 3..7 were played


def test_contexts_from_a_jsonl_with_the_papers_summarisation_table(tmp_path):
    path = tmp_path / "contexts.jsonl"
    sources = ["cnn_dailymail", "slf5k", "wikipedia", "arxiv", "imdb"]
    path.write_text("".join(json.dumps({"text": f"document {i} about {s} things", "source": s}) + "\n"
                            for i, s in enumerate(sources * 2)))
    cfg = compose_config(["experiment=cipher", f"data.path={path}", "data.preferences=summarization",
                          "data.rounds=10", "data.seeds=[0]"], tmp_path / "run")
    with open_dict(cfg):
        cfg.method.agents = OmegaConf.create({"oracle": {"kind": "oracle"}, "cipher_1": {"kind": "cipher"}})
    rows = [json.loads(line) for line in open(train(cfg)["stages"]["main"].output)]
    assert sorted(r["context_id"] for r in rows if r["agent"] == "oracle") == sorted(
        f"{path}:{i}" for i in range(1, 11))
    oracle = [r for r in rows if r["agent"] == "oracle"]
    assert all(r["class_match"] == 1.0 for r in oracle) and "exact" not in oracle[0]
