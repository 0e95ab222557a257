import lightning as L
import pytest
import torch

from datamodules.preference import PreferenceDataModule
from datamodules.tasks import ArithmeticPairTask
from lightning_modules.bt_rm import BTRMModule
from lightning_modules.pairwise_rm import PairwiseRMModule, judge_rows
from posttrain.metrics import kendall_tau_within_and_across, pair_judgement_metrics
from posttrain.models import tiny_llama
from posttrain.models.value_head import ValueModel

PAIRS = [{"prompt": "1+1=", "chosen": "2", "rejected": "3", "index": 0},
         {"prompt": "2+5=", "chosen": "7", "rejected": "x", "index": 1}]

ADAMW = {"_target_": "torch.optim.AdamW", "lr": 3e-3, "weight_decay": 0.0}
CONSTANT = {"_target_": "posttrain.optim.warmup_schedule", "decay": "constant"}


def test_both_orders_hold_every_pair_with_the_label_flipped():
    prompts, a, b, z = judge_rows(PAIRS, both_orders=True)
    rows = list(zip(prompts, a, b, z.tolist()))
    assert rows == [("1+1=", "2", "3", 1.0), ("2+5=", "7", "x", 1.0), ("1+1=", "3", "2", 0.0), ("2+5=", "x", "7", 0.0)]


def test_one_order_is_fixed_per_pair_and_labelled():
    pairs = [{"prompt": "q", "chosen": f"c{i}", "rejected": f"r{i}", "index": i} for i in range(200)]
    prompts, a, b, z = judge_rows(pairs, both_orders=False, seed=3)
    assert len(a) == 200 and judge_rows(pairs, both_orders=False, seed=3)[1] == a
    assert all((x, y) == ((f"c{i}", f"r{i}") if z[i] == 1 else (f"r{i}", f"c{i}")) for i, (x, y) in enumerate(zip(a,
                                                                                                                  b)))
    assert 70 < z.sum().item() < 130  # both orders occur


def test_pair_metrics_by_hand():
    # pair 1: P(A≻B) = 0.9 forward, 0.3 backward (P̄ = 0.8, right; position gap 0.2)
    # pair 2: 0.4 forward, 0.4 backward (P̄ = 0.5: not counted right; one order right of two)
    m = pair_judgement_metrics(torch.tensor([0.9, 0.4]), torch.tensor([0.3, 0.4]))
    assert m["pair_accuracy"].item() == 0.5
    assert m["pair_accuracy_one_order"].item() == pytest.approx(3 / 4)
    assert m["position_consistency"].item() == pytest.approx((0.2 + 0.2) / 2)
    assert m["brier"].item() == pytest.approx((0.01 + 0.36 + 0.09 + 0.16) / 4)
    # bins: {0.9 (label 1)}: |1 − 0.9|; {0.4 (label 1), 0.4 (label 0)}: |1 − 0.8|; {0.3 (label 0)}: |0 − 0.3|
    assert m["ece"].item() == pytest.approx((0.1 + 0.2 + 0.3) / 4)
    # position_consistency is an inconsistency: 0 for a judge without position bias, 1 for one that always says A
    assert pair_judgement_metrics(torch.tensor([0.7]), torch.tensor([0.3]))["position_consistency"].item() == 0
    assert pair_judgement_metrics(torch.tensor([1.0]), torch.tensor([1.0]))["position_consistency"].item() == 1


def test_kendall_tau_within_and_across_prompts():
    # prompt 0: rewards order its two responses right; prompt 1: wrong. Across: 4 comparable pairs.
    values = torch.tensor([2.0, 1.0, 0.0, 0.5])
    scores = torch.tensor([0.0, -1.0, 0.0, float("-inf")])
    within, across = kendall_tau_within_and_across(values, scores, torch.tensor([0, 0, 1, 1]))
    assert within.item() == 0.0  # +1 and −1
    # across pairs: (0,2) tie in gold, skipped; (0,3) +1; (1,2) gold says 2 is better, value 1 > 0: −1; (1,3) +1
    assert across.item() == pytest.approx(1 / 3)


def fit(module, data, steps):
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, max_epochs=-1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=-1,
                        check_val_every_n_epoch=None, val_check_interval=steps, gradient_clip_val=1.0)
    trainer.fit(module, datamodule=data)
    return module.eval_history


@pytest.fixture(scope="module")
def easy():
    """Correct vs malformed answers: visible without arithmetic, so a random-init judge learns them in seconds."""
    task = ArithmeticPairTask(digits=[1, 2], ood_digits=[3, 3], train_size=400, val_size=64, test_ood_size=32,
                              correct_fraction=1.0, wrong_kinds={"malformed": 1.0}, label_noise=0.0, seed=0)
    return task


def test_pairwise_rm_learns_easy_pairs(easy):
    model, tokenizer = tiny_llama(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, seed=0)
    data = PreferenceDataModule(tokenizer, task=easy, batch_size=16, eval_batch_size=64, max_length=64)
    module = PairwiseRMModule(model, tokenizer, optimizer=ADAMW, scheduler=CONSTANT)
    start, end = fit(module, data, steps=40)
    assert start["epoch"] == -1 and end["step"] == 40
    assert end["val/pair_accuracy"] > 0.9 > start["val/pair_accuracy"] + 0.2
    # calibration: a judge at chance starts with a small ECE (P ≈ ½, accuracy ≈ ½), so "ECE went down" is not the
    # test; once accurate it must also be confident (ECE < 0.15 at one-order accuracy ~1 needs mean P > 0.85), and
    # the Brier score, which counts both, must fall from chance (0.25) to well below it (seeds 0-2: 0.00-0.05)
    assert end["val/ece"] < 0.15 and end["val/brier"] < 0.1 < start["val/brier"] - 0.1
    assert end["val/position_consistency"] < 0.2
    assert module.model is model  # the judge LM itself, e.g. the frozen judge of Pairwise PPO


def test_bt_rm_scores_the_same_pairs_and_saves(easy, tmp_path):
    model, tokenizer = tiny_llama(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, seed=0)
    data = PreferenceDataModule(tokenizer, task=easy, batch_size=16, eval_batch_size=64, max_length=64)
    module = BTRMModule(model, tokenizer, optimizer=ADAMW, scheduler=CONSTANT)
    start, end = fit(module, data, steps=20)
    assert start["val/pair_accuracy"] == 0 and start["val/brier"] == pytest.approx(0.25)  # zero head: P = 0.5
    assert end["val/pair_accuracy"] > 0.8 and end["val/position_consistency"] < 1e-6
    assert module.model.backbone is model and not model.lm_head.weight.requires_grad
    module.model.save_pretrained(str(tmp_path))
    loaded = ValueModel.from_pretrained(str(tmp_path))
    ids, mask = torch.tensor([[1, 20, 21, 2]]), torch.ones(1, 4, dtype=torch.long)
    torch.testing.assert_close(loaded.score(ids, mask), module.model.score(ids, mask))
