"""PRELUDE interactions as a dataset stage (`output: dataset`): nothing is trained. `trainer.predict` hands over
one seed's stream of contexts per batch; every configured agent (CIPHER-k and the baselines) plays the whole stream
against the simulated user, each round logged to `<log_dir>/seed<s>/<agent>.jsonl` (an existing log is resumed
from its last round). The rounds become the stage's jsonl dataset; at the end the table is printed and written
with the cumulative-cost curves (an image, also logged to TensorBoard)."""
from __future__ import annotations

import json
import os

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image

from posttrain.agents import ChatModel, HFChatModel, build_agent
from posttrain.envs.prelude import PreludeEnv
from posttrain.prelude import report
from posttrain.prelude.agents import make_agent
from posttrain.prelude.encoders import build_encoder
from posttrain.prelude.interaction import interact, preference_scores
from posttrain.prelude.preferences import TextMatcher
from posttrain.prelude.user import SimulatedUser
from posttrain.utils.config import check, check_keys

AGENT_KEYS = ("kind", "k", "explore", "window", "store_empty", "encoder")
# A minimal chat template for a policy model whose tokenizer has none (the tiny default model).
PLAIN_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                  "{% if add_generation_prompt %}<assistant>{% endif %}")


class PreludeModule(L.LightningModule):
    """Args:
        model, tokenizer: the run's model (used by `agent: policy`, `user: policy` and the `policy` encoder).
        agents: {name: {kind, k, explore, window, store_empty, encoder}} (posttrain/prelude/agents.py).
        agent: the agents' language model: a chat model (conf/agent/), or "policy" for the run's own model.
        user: the simulated user's language model (same choices).
        encoder: the default context encoder `{type: tfidf | policy | hf | random, ...}`; an agent's own
            `encoder` replaces it.
        max_new_tokens: the longest reply of any call.
        log_dir: where the per-round logs go (a rerun with the same directory resumes them).
    """

    def __init__(self, model, tokenizer, agents: dict, agent="policy", user="policy", encoder=None,
                 max_new_tokens: int = 256, log_dir: str = "prelude", chat_template: str | None = None):
        super().__init__()
        check(bool(agents), "method.agents", "no agent to run")
        self.model, self.tokenizer, self.chat_template = model, tokenizer, chat_template
        self.specs = {name: check_keys(spec, AGENT_KEYS, f"method.agents.{name}")
                      for name, spec in agents.items() if spec is not None}
        # the run's own model is wrapped once predict starts, on the device Lightning put it on
        self.agent_llm = None if agent == "policy" else build_agent(agent, "method.agent")
        self.user_llm = None if user == "policy" else build_agent(user, "method.user")
        check(self.user_llm is None or self.user_llm is not self.agent_llm, "method.user",
              "must be a chat model of its own (token counts)")
        self.encoder, self.max_new_tokens, self.log_dir = dict(encoder or {"type": "tfidf"}), max_new_tokens, log_dir
        self.rows: list[dict] = []
        self.dataset_metrics: dict = {}
        self.encoders: dict = {}

    def on_predict_start(self) -> None:
        data = self.trainer.datamodule
        self.scorer = preference_scores if data.synthetic else TextMatcher(data.preferences)
        self.agent_llm = self.agent_llm or self.policy_chat("method.agent")
        self.user_llm = self.user_llm or self.policy_chat("method.user")

    def policy_chat(self, key: str) -> ChatModel:
        check(self.model is not None, key, "'policy' needs the run's model")
        template = self.chat_template or getattr(self.tokenizer, "chat_template", None) or PLAIN_TEMPLATE
        return HFChatModel(model=self.model, tokenizer=self.tokenizer, chat_template=template, key=key,
                           device=str(self.device))

    def predict_step(self, batch, batch_idx) -> list[dict]:
        rows = []
        for item in batch:
            for name, spec in self.specs.items():
                rows += self.run(name, spec, item["seed"], item["contexts"])
        self.rows += rows
        return rows

    def run(self, name: str, spec: dict, seed: int, contexts) -> list[dict]:
        data = self.trainer.datamodule
        where = f"method.agents.{name}"
        encoder = None
        if spec.get("kind") in ("cipher", "icl_edit", "cot_edit"):
            encoder = self.context_encoder(spec.get("encoder"), where).fit([c.text for c in contexts])
        agent = make_agent(spec, where, self.agent_llm, encoder, data.task, self.max_new_tokens)
        user = SimulatedUser(self.user_llm, data.preferences, data.task, self.max_new_tokens)
        directory = os.path.join(self.log_dir, f"seed{seed}")
        os.makedirs(directory, exist_ok=True)
        return interact(agent, PreludeEnv(contexts, user, where="data"), seed, os.path.join(directory,
                        f"{name}.jsonl"), name=name, scorer=self.scorer)

    def context_encoder(self, own: dict | None, where: str):
        """The agent's encoder (its own `encoder`, else `method.encoder`): a fresh TF-IDF per stream (it is fitted
        on the stream's contexts), one shared instance of any other kind (a model is loaded once)."""
        options = dict(own or self.encoder)
        key = f"{where}.encoder" if own else "method.encoder"
        if options.get("type", "tfidf") == "tfidf":
            return build_encoder(options, key)
        name = json.dumps(options, sort_keys=True)
        if name not in self.encoders:
            self.encoders[name] = build_encoder(options, key, self.model, self.tokenizer)
        return self.encoders[name]

    def on_predict_epoch_end(self) -> None:
        if self.trainer.world_size > 1:  # each process played its share of the seeds
            parts = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(parts, self.rows)
            self.rows = [row for part in parts for row in part]
        table = report.summary(self.rows)
        self.dataset_metrics = {f"cost/{agent}": m["cost"] for agent, m in table.items()}
        if not self.trainer.is_global_zero:
            return
        print("\nPRELUDE: cumulative edit cost over " f"{next(iter(table.values()))['rounds']} rounds, "
              f"{next(iter(table.values()))['seeds']} seed(s)\n" + report.format_table(table) + "\n", flush=True)
        curves = report.curves(self.rows)
        image = report.plot(curves)
        os.makedirs(self.log_dir, exist_ok=True)
        Image.fromarray(image).save(os.path.join(self.log_dir, "cumulative_cost.png"))
        with open(os.path.join(self.log_dir, "summary.json"), "w") as handle:
            json.dump(table, handle, indent=1)
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("prelude/cumulative_cost", image, dataformats="HWC")
                for agent, curve in curves.items():
                    for t, value in enumerate(curve):
                        logger.experiment.add_scalar(f"prelude/cumulative_cost/{agent}", float(value), t + 1)
