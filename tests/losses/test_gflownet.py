"""GFlowVLM's losses on numbers worked out by hand."""
import math

import pytest
import torch

from posttrain.losses.gflownet import db_loss, forward_logprob, subtb_loss, trajectory_zeta, var_tb_loss

# Two trajectories: b=0 with 2 moves then its own [DONE]; b=1 with 1 move, termination forced (log P⊤_1 = 0).
LOG_PF = torch.tensor([[-0.5, -1.0], [-0.2, 0.0]])
LOG_PTERM = torch.tensor([[-2.0, -1.5, -0.3], [-1.0, 0.0, 0.0]])
LOG_R = torch.tensor([[math.log(20.0), math.log(50.0), math.log(100.0)], [math.log(10.0), math.log(20.0), 0.0]])
LENGTHS = torch.tensor([2, 1])


def potentials_by_hand():
    """A_i = log R_i − log P⊤_i − S_i, written out."""
    a0 = [math.log(20) + 2.0, math.log(50) + 1.5 + 0.5, math.log(100) + 0.3 + 1.5]
    a1 = [math.log(10) + 1.0, math.log(20) - 0.0 + 0.2]
    return a0, a1


def test_forward_logprob_weights_the_thoughts_by_lambda():
    assert forward_logprob(torch.tensor(-1.0), torch.tensor(-5.0)).item() == pytest.approx(-1.0 - 0.4 * 5.0)
    assert forward_logprob(torch.tensor(-1.0), torch.tensor(-5.0), lam=0.2).item() == pytest.approx(-2.0)


def test_zeta_is_the_trajectory_sum_minus_log_reward():
    zeta = trajectory_zeta(LOG_PF, LOG_PTERM, LOG_R, LENGTHS)
    assert zeta[0].item() == pytest.approx(-0.5 - 1.0 - 0.3 - math.log(100), abs=1e-5)
    assert zeta[1].item() == pytest.approx(-0.2 - math.log(20), abs=1e-5)


def test_var_tb_by_hand():
    zeta = [-1.8 - math.log(100), -0.2 - math.log(20)]
    loss, metrics = var_tb_loss(LOG_PF, LOG_PTERM, LOG_R, LENGTHS, groups=torch.tensor([7, 7]))
    mean = sum(zeta) / 2
    assert loss.item() == pytest.approx(sum((z - mean) ** 2 for z in zeta) / 2, rel=1e-5)
    assert metrics["log_z"].item() == pytest.approx(-mean, rel=1e-5)
    alone, _ = var_tb_loss(LOG_PF, LOG_PTERM, LOG_R, LENGTHS, groups=torch.tensor([1, 2]))
    assert alone.item() == 0.0  # one trajectory per task: nothing to compare


def test_var_tb_is_zero_when_every_trajectory_of_a_task_has_the_same_zeta():
    log_pf = torch.tensor([[math.log(0.5)], [math.log(0.25)]])
    log_r = torch.tensor([[0.0, math.log(2.0)], [0.0, math.log(1.0)]])  # P_F ∝ R: Z = 4 for both
    loss, metrics = var_tb_loss(log_pf, torch.zeros(2, 2), log_r, torch.tensor([1, 1]), torch.tensor([0, 0]))
    assert loss.item() == pytest.approx(0.0, abs=1e-10)
    assert metrics["log_z"].item() == pytest.approx(math.log(4.0))


def test_subtb_by_hand():
    a0, a1 = potentials_by_hand()
    pairs0 = [(a0[i] - a0[j]) ** 2 for i in range(3) for j in range(i + 1, 3)]
    pairs1 = [(a1[0] - a1[1]) ** 2]
    loss, metrics = subtb_loss(LOG_PF, LOG_PTERM, LOG_R, LENGTHS)
    assert loss.item() == pytest.approx((sum(pairs0) + sum(pairs1)) / 2, rel=1e-5)
    assert metrics["pairs"].item() == 2.0  # 3 pairs and 1


def test_subtb_pair_is_the_spec_residual():
    # one pair (0, 1): log R_0 + log P_F + log P⊤_1 − log R_1 − log P⊤_0
    residual = math.log(20) + (-0.5) + (-1.5) - math.log(50) - (-2.0)
    loss, _ = subtb_loss(LOG_PF[:1, :1], LOG_PTERM[:1, :2], LOG_R[:1, :2], torch.tensor([1]))
    assert loss.item() == pytest.approx(residual**2, rel=1e-5)


def test_db_by_hand():
    a0, a1 = potentials_by_hand()
    transitions = [(a0[0] - a0[1]) ** 2, (a0[1] - a0[2]) ** 2, (a1[0] - a1[1]) ** 2]
    loss, metrics = db_loss(LOG_PF, LOG_PTERM, LOG_R, LENGTHS)
    assert loss.item() == pytest.approx(sum(transitions) / 3, rel=1e-5)
    assert metrics["transitions"].item() == 3


def test_consistent_flows_give_zero_subtb_and_db():
    # a chain whose every state flow F = R / P⊤ satisfies F_i P_F(i -> i+1) = F_{i+1}
    log_f = torch.tensor([math.log(8.0), math.log(4.0), math.log(2.0)])
    log_pterm = torch.log(torch.tensor([[0.5, 0.25, 1.0]]))
    log_r = log_f + log_pterm
    log_pf = (log_f[1:] - log_f[:-1])[None]
    for loss_fn in (subtb_loss, db_loss):
        loss, _ = loss_fn(log_pf, log_pterm, log_r, torch.tensor([2]))
        assert loss.item() == pytest.approx(0.0, abs=1e-10)


def test_gradients_reach_every_input_that_matters():
    log_pf = LOG_PF.clone().requires_grad_()
    log_pterm = LOG_PTERM.clone().requires_grad_()
    loss, _ = db_loss(log_pf, log_pterm, LOG_R, LENGTHS)
    loss.backward()
    assert log_pf.grad[1, 1] == 0 and log_pterm.grad[1, 2] == 0  # past the end of trajectory 1
    assert log_pf.grad[0].abs().min() > 0 and log_pterm.grad[0].abs().min() > 0


# ---- cross-check against torchgfn ------------------------------------------------------------------------------------
# The literals below come from torchgfn 2.4.1, run outside the project (it pins numpy < 2) by
# scripts/torchgfn_reference.py, which says how to set it up: a 1-d HyperGrid of height 4, a chain where state x
# moves to x + 1 or exits: P_F("+1" | x) = sigmoid(MOVE_LOGIT[x]) against an exit logit of 0 (x = 3 may only exit),
# rewards R(x) = REWARD[x], 6 trajectories sampled after torch.manual_seed(6) with these move counts.
# LogPartitionVarianceGFlowNet(constant_pb=True).loss gave VAR_TB; ModifiedDBGFlowNet.loss on the trajectories'
# transitions gave DB; SubTBGFlowNet with logF(x) = log R(x) − log P_F(exit | x) (the terminable-state flow) gave
# per-sub-trajectory residuals by get_scores, and SUBTB is the mean over trajectories of the sum of the squared
# residuals of the sub-trajectories that end at a state (torchgfn also scores the ones that end at its sink state,
# with log R as the target; the spec's sum has no such terms). Rerun there, it printed 1.4401350021362305,
# 3.7697246074676514 and 8.31103229522705.
MOVE_LOGIT = [0.3, -0.2, 0.8]
REWARD = [20.0, 50.0, 100.0, 7.0]
TORCHGFN_LENGTHS = [1, 0, 3, 2, 1, 0]
TORCHGFN_VAR_TB, TORCHGFN_DB, TORCHGFN_SUBTB = 1.4401350021362305, 3.7697246074676514, 8.311034202575684


def chain_layout():
    """The torchgfn chain's trajectories in the losses' layout: log P_F of each move, log P⊤ of each state
    (exit forced at x = 3: 0), log R of each state."""
    lengths = torch.tensor(TORCHGFN_LENGTHS)
    width = int(lengths.max())
    log_move = torch.nn.functional.logsigmoid(torch.tensor(MOVE_LOGIT))  # (3,)
    log_exit = torch.cat([torch.nn.functional.logsigmoid(-torch.tensor(MOVE_LOGIT)), torch.zeros(1)])  # (4,)
    log_pf = torch.zeros(len(lengths), width)  # (B, M)
    log_pterm = torch.zeros(len(lengths), width + 1)  # (B, M+1)
    log_reward = torch.zeros(len(lengths), width + 1)  # (B, M+1)
    for b, m in enumerate(TORCHGFN_LENGTHS):
        log_pf[b, :m] = log_move[:m]
        log_pterm[b, :m + 1] = log_exit[:m + 1]
        log_reward[b, :m + 1] = torch.log(torch.tensor(REWARD[:m + 1]))
    return log_pf, log_pterm, log_reward, lengths


def test_losses_match_torchgfn_on_a_chain():
    args = chain_layout()
    var_tb, _ = var_tb_loss(*args, groups=torch.zeros(len(TORCHGFN_LENGTHS), dtype=torch.long))  # one task
    assert var_tb.item() == pytest.approx(TORCHGFN_VAR_TB, rel=1e-5)
    db, _ = db_loss(*args)
    assert db.item() == pytest.approx(TORCHGFN_DB, rel=1e-5)
    subtb, _ = subtb_loss(*args)
    assert subtb.item() == pytest.approx(TORCHGFN_SUBTB, rel=1e-5)


# ---- histories outside R's support (an invalid answer): one-sided residuals ------------------------------------------
# trajectory 0 of LOG_PF above is valid; trajectory 1's single move is an invalid answer, so its state 1 is outside
OUTSIDE = torch.tensor([[False, False, False], [False, True, True]])


def test_db_residual_into_the_outside_only_lowers_a_path_that_is_too_likely():
    a0, a1 = potentials_by_hand()
    inside = [(a0[0] - a0[1]) ** 2, (a0[1] - a0[2]) ** 2]
    residual = a1[0] - a1[1]  # log 10 + 1.0 − log 20 − 0.2 > 0: the path into the outside is too likely
    assert residual > 0
    loss, metrics = db_loss(LOG_PF, LOG_PTERM, LOG_R, LENGTHS, outside=OUTSIDE)
    assert loss.item() == pytest.approx((sum(inside) + residual**2) / 3, rel=1e-5)
    # the same path already unlikely enough (log P_F = −5, residual < 0): no term at all, not a push upwards
    low = LOG_PF.clone()
    low[1, 0] = -5.0
    assert a1[0] - (math.log(20) + 5.0) < 0
    loss, _ = db_loss(low, LOG_PTERM, LOG_R, LENGTHS, outside=OUTSIDE)
    assert loss.item() == pytest.approx(sum(inside) / 3, rel=1e-5)
    squared, _ = db_loss(low, LOG_PTERM, LOG_R, LENGTHS)  # the floor's squared residual would raise it
    assert squared.item() > loss.item()


def test_subtb_drops_pairs_that_start_outside_and_relus_those_that_end_there():
    # one trajectory of 3 moves, the second an invalid answer: states 2 and 3 are outside
    log_pf = torch.tensor([[-0.5, -40.0, -0.2]])
    log_pterm = torch.tensor([[-2.0, -1.0, -3.0, -0.1]])
    log_r = torch.log(torch.tensor([[20.0, 50.0, 1e-10, 1e-10]]))
    outside = torch.tensor([[False, False, True, True]])
    s = [0.0, -0.5, -40.5, -40.7]
    a = [math.log(20) + 2.0 - s[0], math.log(50) + 1.0 - s[1], math.log(1e-10) + 3.0 - s[2],
         math.log(1e-10) + 0.1 - s[3]]
    expected = (a[0] - a[1]) ** 2  # both inside: squared
    expected += sum(max(a[i] - a[j], 0.0) ** 2 for i in (0, 1) for j in (2, 3))  # into the outside: relu
    loss, metrics = subtb_loss(log_pf, log_pterm, log_r, torch.tensor([3]), outside=outside)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert metrics["pairs"].item() == 5  # (2, 3) starts outside: dropped
    assert any(a[i] - a[j] < 0 for i in (0, 1) for j in (2, 3))  # so the relu did cut a term


def test_var_tb_mean_is_over_the_valid_trajectories_and_invalid_ones_only_go_down():
    log_pf = torch.tensor([[-1.0], [-2.0], [-40.0], [-1.0]])
    log_r = torch.log(torch.tensor([[1.0, 100.0], [1.0, 50.0], [1.0, 1e-10], [1.0, 1e-10]]))
    outside = torch.tensor([[False, False], [False, False], [False, True], [False, True]])
    zeta = [-1.0 - math.log(100), -2.0 - math.log(50), -40.0 - math.log(1e-10), -1.0 - math.log(1e-10)]
    mean = (zeta[0] + zeta[1]) / 2  # the valid ones estimate −log Z
    assert zeta[2] < mean < zeta[3]  # the unlikely invalid answer is below it, the likely one above
    terms = [(zeta[0] - mean) ** 2, (zeta[1] - mean) ** 2, 0.0, (zeta[3] - mean) ** 2]
    loss, _ = var_tb_loss(log_pf, torch.zeros(4, 2), log_r, torch.ones(4, dtype=torch.long), torch.zeros(4),
                          outside=outside)
    assert loss.item() == pytest.approx(sum(terms) / 4, rel=1e-5)
