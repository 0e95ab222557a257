"""The torchgfn reference values of tests/losses/test_gflownet.py (TORCHGFN_VAR_TB, TORCHGFN_DB, TORCHGFN_SUBTB).

torchgfn pins numpy < 2, so it runs in an environment of its own, not the project's:

    python -m venv --system-site-packages /tmp/gfnvenv
    /tmp/gfnvenv/bin/pip install --no-deps torchgfn==2.4.1
    /tmp/gfnvenv/bin/pip install 'numpy<2' dill einops tensordict torch_geometric linear-attention-transformer
    /tmp/gfnvenv/bin/python scripts/torchgfn_reference.py

A 1-d HyperGrid of height 4 is a chain: state x moves to x + 1 or exits; P_F("+1" | x) = sigmoid(MOVE_LOGIT[x])
against an exit logit of 0 (x = 3 may only exit), R(x) = REWARD[x]. Six trajectories sampled after
torch.manual_seed(6) (moves 1, 0, 3, 2, 1, 0). Var-TB is LogPartitionVarianceGFlowNet's loss, DB ModifiedDBGFlowNet's;
for SubTB, SubTBGFlowNet with log F(x) = log R(x) − log P_F(exit | x) (the terminable-state flow) scores every
sub-trajectory, and the reference is the mean over trajectories of the sum of the squared scores of those that end at
a state (torchgfn also scores the ones that end at its sink state; the spec's sum has no such terms).
"""
import torch
from gfn.estimators import DiscretePolicyEstimator, ScalarEstimator
from gfn.gflownet import LogPartitionVarianceGFlowNet, ModifiedDBGFlowNet, SubTBGFlowNet
from gfn.gym import HyperGrid
from gfn.preprocessors import IdentityPreprocessor
from gfn.samplers import Sampler
from torch import nn

MOVE_LOGIT = [0.3, -0.2, 0.8]
REWARD = [20.0, 50.0, 100.0, 7.0]


class Chain(HyperGrid):
    def reward(self, states):
        return torch.tensor(REWARD)[states.tensor[..., 0]]


class PF(nn.Module):
    def forward(self, x):  # x (B, 1) float: the position
        i = x[..., 0].long().clamp(max=2)
        move = torch.tensor(MOVE_LOGIT)[i]
        return torch.stack([move, torch.zeros_like(move)], -1)  # [move, exit]


class LogF(nn.Module):
    def forward(self, x):
        pos = x[..., 0].long()
        logr = torch.log(torch.tensor(REWARD))[pos]
        log_exit = torch.nn.functional.logsigmoid(-torch.tensor(MOVE_LOGIT + [float("inf")]))[pos]
        log_exit = torch.where(pos == 3, torch.zeros_like(log_exit), log_exit)
        return (logr - log_exit)[..., None]


env = Chain(ndim=1, height=4, validate_modes=False)
pre = IdentityPreprocessor(output_dim=1)
pf = DiscretePolicyEstimator(PF(), n_actions=2, preprocessor=pre)
torch.manual_seed(6)
trajs = Sampler(pf).sample_trajectories(env, n=6)
print("lengths (moves)", (trajs.terminating_idx - 1).tolist())
vartb = LogPartitionVarianceGFlowNet(pf, None, constant_pb=True)
print("VAR_TB", vartb.loss(env, trajs).item())
db = ModifiedDBGFlowNet(pf, None, constant_pb=True)
print("DB", db.loss(env, db.to_training_samples(trajs)).item())
subtb = SubTBGFlowNet(pf, None, ScalarEstimator(LogF(), preprocessor=pre), constant_pb=True)
scores, masks = subtb.get_scores(trajs, env=env)
# sub-trajectories that end at a state (not the sink): s_n -> s_{n+k} with n + k <= m
m = trajs.terminating_idx - 1  # (B,) moves
total = torch.zeros(len(m))
for k, (score, mask) in enumerate(zip(scores, masks), start=1):
    for n in range(score.shape[0]):
        ok = (~mask[n]) & (n + k <= m)
        total += torch.where(ok, score[n] ** 2, torch.zeros_like(total))
print("SUBTB", total.mean().item())
