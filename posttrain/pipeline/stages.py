"""The stage schema: what `stages.<key>` may hold, checked before anything trains, and the order stages run in.

    stages:
      <key>:                  # e.g. warmup, teacher, reward_model, generate, main, control
        method: {...}         # required: a method config (_target_ a LightningModule)
        name: <label>         # its rows' label in the results table (default: the key)
        data: {...}           # its data config (default: the top-level `data`)
        model: {...}          # its own model config, with start: model only (default: the top-level `model`)
        start: model          # `model` (built fresh) or an earlier stage whose output model it trains a copy of;
                              # `none`: a dataset stage whose method takes no model (model=None; nor is the model
                              # config in its cache key, so changing the trained model does not redo its data)
        cache: false          # true: reuse the output of an identical earlier run (posttrain/pipeline/cache.py)
        trainer: {...}        # overrides over the top-level `trainer` for this stage (e.g. max_epochs)
        callbacks: {...}      # {name: callback config}: Lightning callbacks of this stage's fit only, besides the
                              # top-level `callbacks` (e.g. EarlyStopping: train to a target accuracy on `dev`)
        inputs: {...}         # {constructor kwarg: stage}: that stage's output (a model, a reward model or a
                              # dataset file) is passed to the method; {data.<key>: stage}: the dataset stage's
                              # file becomes that key of this stage's own `data` (e.g. data.task.train_path)
        evaluate_on: {...}    # a data config: after fitting, one validation there, a row labelled `name`
        output: model         # model | reward_model (handed on as an input only) | dataset (a jsonl file) |
                              # dataset_dir (a folder the method writes: its `write_dataset(items, directory)`)
        ckpt_path: null       # resume this stage's fit from a Lightning checkpoint
        save_dir: null        # write the output model there (save_pretrained)

`stages.<key>=null` removes a stage; a stage that started from it starts from `model` instead. Stages run in the
order of the mapping, except that a stage waits for the stages it starts from or takes inputs from.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf

from posttrain.utils.config import ConfigError, check, check_choice

OUTPUTS = ("model", "reward_model", "dataset", "dataset_dir")
DATASETS = ("dataset", "dataset_dir")  # outputs handed on as a path
FIELDS = ("method", "name", "data", "model", "start", "cache", "trainer", "callbacks", "inputs", "evaluate_on",
          "output", "ckpt_path", "save_dir")
DATA_INPUT = "data."  # an `inputs` key with this prefix sets a key of the stage's own data config
NO_MODEL = "none"  # `start: none`: the stage's method is given no model
FRESH = ("model", NO_MODEL)  # starts that are not another stage


@dataclass
class Stage:
    key: str
    node: DictConfig  # the live config node `stages.<key>` (interpolations unresolved)
    name: str
    start: str
    cache: bool
    output: str
    inputs: dict[str, str] = field(default_factory=dict)
    ckpt_path: str | None = None
    save_dir: str | None = None

    @property
    def where(self) -> str:
        return f"stages.{self.key}"

    def depends_on(self) -> list[str]:
        """The stages this one needs first: where it starts, then its inputs."""
        return ([self.start] if self.start not in FRESH else []) + list(self.inputs.values())

    def data_inputs(self) -> dict[str, str]:
        """{key inside this stage's data config: dataset stage}."""
        return {k[len(DATA_INPUT):]: v for k, v in self.inputs.items() if k.startswith(DATA_INPUT)}

    def method_inputs(self) -> dict[str, str]:
        """{constructor kwarg: stage}."""
        return {k: v for k, v in self.inputs.items() if not k.startswith(DATA_INPUT)}


def parse_stages(cfg: DictConfig) -> list[Stage]:
    """The configured stages (removed ones left out) in the order they run; every reference is checked."""
    nodes = cfg.get("stages") or {}
    check(isinstance(nodes, DictConfig), "stages", "must be a mapping of stage name -> stage config")
    stages = {key: parse_stage(str(key), node) for key, node in nodes.items() if node is not None}
    check(bool(stages), "stages", "no stage to run")
    removed = {str(key) for key, node in nodes.items() if node is None}
    for stage in stages.values():
        if stage.start in removed:
            stage.start = "model"
        check_references(stage, stages, removed)
    return run_order(stages)


def parse_stage(key: str, node) -> Stage:
    where = f"stages.{key}"
    check(isinstance(node, DictConfig), where, f"must be a stage config (a mapping) or null, got {node!r}")
    unknown = sorted(set(node.keys()) - set(FIELDS))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown stage key; a stage has {list(FIELDS)}")
    check(node.get("method") is not None, f"{where}.method", "required: the stage's method config")
    output = node.get("output", "model")
    check_choice(output, OUTPUTS, f"{where}.output")
    inputs = node.get("inputs") or {}
    check(isinstance(inputs, (dict, DictConfig)), f"{where}.inputs", "must be a mapping {argument: stage}")
    callbacks = node.get("callbacks") or {}
    check(isinstance(callbacks, (dict, DictConfig)), f"{where}.callbacks", "must be a mapping {name: callback config}")
    cache = node.get("cache", False)
    check(isinstance(cache, bool), f"{where}.cache", f"must be true or false, got {cache!r}")
    return Stage(key=key, node=node, name=str(node.get("name") or key), start=str(node.get("start", "model")),
                 cache=cache, output=output, inputs={str(k): str(v) for k, v in inputs.items()},
                 ckpt_path=node.get("ckpt_path"), save_dir=node.get("save_dir"))


def check_references(stage: Stage, stages: dict[str, Stage], removed: set[str]) -> None:
    where = stage.where
    if stage.start == NO_MODEL:
        check(stage.output in DATASETS, f"{where}.start", f"'{NO_MODEL}' (no model) is for a stage that writes a "
              f"dataset; this one outputs a {stage.output}")
    elif stage.start != "model":
        check(stage.start in stages, f"{where}.start", f"must be 'model', '{NO_MODEL}' or a stage, got "
              f"{stage.start!r}")
        check(stages[stage.start].output == "model", f"{where}.start",
              f"stage {stage.start!r} outputs a {stages[stage.start].output}, not a model to start from")
    reason = "start: none takes no model" if stage.start == NO_MODEL else f"it starts from stage {stage.start!r}"
    check(stage.node.get("model") is None or stage.start == "model", f"{where}.model",
          f"its own model needs start: model ({reason})")
    for argument, source in stage.inputs.items():
        check(source not in removed, f"{where}.inputs.{argument}", f"stage {source!r} was removed (set to null)")
        check(source in stages, f"{where}.inputs.{argument}", f"no stage {source!r}; stages: {sorted(stages)}")
        check(source != stage.key, f"{where}.inputs.{argument}", "a stage cannot take its own output")
    for key, source in stage.data_inputs().items():
        check(stages[source].output in DATASETS, f"{where}.inputs.{DATA_INPUT}{key}",
              f"stage {source!r} outputs a {stages[source].output}, not a dataset")
        check(isinstance(stage.node.get("data"), DictConfig), f"{where}.inputs.{DATA_INPUT}{key}",
              f"needs {where}.data, the stage's own data config, to set the key in")


def run_order(stages: dict[str, Stage]) -> list[Stage]:
    """Mapping order, except that a stage runs only after every stage it depends on (Kahn's algorithm, picking the
    earliest ready stage of the mapping each time)."""
    pending, done, order = list(stages), set(), []
    while pending:
        ready = next((k for k in pending if set(stages[k].depends_on()) <= done), None)
        if ready is None:
            raise ConfigError(f"stages: a cycle of starts/inputs among {pending}")
        pending.remove(ready)
        done.add(ready)
        order.append(stages[ready])
    return order


def resolved(node) -> dict | None:
    """A config node as plain data with every interpolation resolved (what a cache key hashes)."""
    if node is None:
        return None
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
