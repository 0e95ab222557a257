"""OTRModule: configuration errors name the key; the step's candidates are reproducible and backend-independent."""
import pytest
import torch
from hydra.utils import instantiate

from posttrain.ops import _backend
from posttrain.pipeline import train
from tests.helpers import compose_config

MAIN_ONLY = ["experiment=otr", "debug=tiny", "stages.warmup=null", "stages.control=null"]  # OTR alone, from scratch


@pytest.mark.parametrize(
    "override, key",
    [("method.k=0", "method.k"), ("method.temperature=0", "method.temperature"), ("method.beta=1.5", "method.beta"),
     ("method.normalization=batch", "method.normalization"), ("method.estimator=exact", "method.estimator")],
)
def test_bad_value_names_the_key(override, key, tmp_path):
    cfg = compose_config([*MAIN_ONLY, override], tmp_path)
    model, tokenizer = instantiate(cfg.model)
    with pytest.raises(Exception, match=key.replace(".", r"\.")):
        instantiate(cfg.method, model=model, tokenizer=tokenizer, _convert_="all")


def step_loss(cfg, batch, backend: str):
    model, tokenizer = instantiate(cfg.model)
    module = instantiate(cfg.method, model=model, tokenizer=tokenizer, _convert_="all")
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    with _backend.force(backend):
        loss, metrics, _ = module.sampled_loss(logits, labels, labels != -100)
    return loss, metrics


def test_extension_and_reference_give_the_same_loss(tmp_path):
    if _backend.extension() is None:
        pytest.skip("extension not built")
    # A fixed batch (2-digit addition), not the experiment's current data: the two backends may legitimately pick
    # neighbouring tokens when a uniform falls within float rounding of a CDF boundary (seen once, |u - cdf| ~ 5e-9),
    # which makes the loss comparison depend on the data drawn.
    cfg = compose_config([*MAIN_ONLY, "data.task.operations=[+]",
                          "data.task.val_size=1000", "data.task.retain_operations=[]"], tmp_path)
    datamodule = instantiate(cfg.data, tokenizer=instantiate(cfg.model)[1])
    datamodule.setup()
    batch = next(iter(datamodule.train_dataloader()))
    ext, ext_metrics = step_loss(cfg, batch, "ext")
    ref, ref_metrics = step_loss(cfg, batch, "torch")
    torch.testing.assert_close(ext, ref, rtol=1e-5, atol=1e-6)
    assert ext_metrics["hit_rate"].item() == ref_metrics["hit_rate"].item()


@pytest.mark.parametrize("estimator", ["sampled", "expectation"])
def test_logs_the_issue_metrics(estimator, tmp_path):
    cfg = compose_config([*MAIN_ONLY, "trainer.max_epochs=1",
                          f"method.estimator={estimator}", "logger=csv"], tmp_path)
    result = train(cfg)
    logged = set(result["trainer"].logged_metrics) | set(result["trainer"].callback_metrics)
    for name in ("loss", "loss/hit", "loss/miss", "reward", "hit_rate", "label_logp", "entropy"):
        assert f"train/{name}" in logged, name
