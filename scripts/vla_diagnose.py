"""Where does a trained VLA policy fail: fitting, generalisation, or execution?

    OMP_NUM_THREADS=1 python scripts/vla_diagnose.py --model DIR | --ckpt last.ckpt --demos DEMOS_DIR
        [--prompt unified] [--tasks pick-place-v3 push-v3] [--held-out 6] [--episodes 4] [--execute 4 1]
        [-- key=value ...]

`DIR` is a saved VLA (a stage's `save_dir`, `VLAModel.save_pretrained`), or `last.ckpt` an arm's Lightning
checkpoint (`<run>/checkpoints/<stage>/last.ckpt`; the model is built from `experiment=internvla_m1` and the given
overrides, then loaded), `DEMOS_DIR` the demonstrations it was trained on (the normalisation statistics and the
training episodes' reset seeds come from there). Prints:

1. Open-loop action error, in the environment's units, of the sampled chunk against the expert's next actions,
   on training frames and on frames of fresh expert episodes of held-out layouts (`val` split seeds no
   demonstration used), beside two reference predictors: the demonstrations' mean action, and the expert's previous
   action repeated (what a policy that only tracks the current motion would score). A policy that beats neither
   has not learnt the task; one that fits the training frames and not the held-out ones overfits.
2. Closed-loop success from the training demonstrations' own initial states (the layouts it was fit on) and from
   held-out layouts, executing the first `--execute` actions of every chunk, with the gripper's closest approach
   to the object (metres) and the object's final distance to the goal: whether the arm reaches, grasps, delivers.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datamodules.robot import RobotDataModule  # noqa: E402
from posttrain.envs import make_env  # noqa: E402
from posttrain.envs.demos import action_chunk, collect_demos  # noqa: E402
from posttrain.models.vla import load_vla  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def model_from_checkpoint(path: str, overrides: list[str]):
    """The VLA of an InternVLAModule checkpoint: built from the experiment's model config, weights and statistics
    loaded from the checkpoint's `model.` entries."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from posttrain.pipeline.run import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=os.path.join(ROOT, "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=internvla_m1", *overrides])
    model, processor = instantiate(cfg.model)
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    model.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
    return model, processor


def observation(episode, t: int) -> dict:
    return {"scene": episode.scene[t], "wrist": episode.wrist[t], "state": episode.state[t],
            "instruction": episode.instruction}


def open_loop(model, data, episodes, mean_action: np.ndarray, generator, batch: int = 32,
              cfg_scale: float | None = None) -> dict:
    """Mean squared error per action dimension (first action; whole chunk) of the policy and the two references."""
    frames = [(e, t) for e in episodes for t in range(len(e))]
    errors = {"policy_first": [], "policy_chunk": [], "mean_first": [], "previous_first": []}
    for start in range(0, len(frames), batch):
        part = frames[start: start + batch]
        inputs = data.encode_observations([observation(e, t) for e, t in part], [0] * len(part))
        chunks = model.act(inputs["prompt_input_ids"], inputs["prompt_attention_mask"], inputs["image_inputs"],
                           inputs["views"], inputs["state"], generator=generator,
                           cfg_scale=cfg_scale).numpy()  # (B, H, A)
        for (episode, t), chunk in zip(part, chunks):
            target, mask = action_chunk(episode.action, t, model.chunk)  # (H, A), (H,)
            errors["policy_first"].append((chunk[0] - target[0]) ** 2)
            errors["policy_chunk"].append((((chunk - target) ** 2) * mask[:, None]).sum(0) / mask.sum())
            errors["mean_first"].append((mean_action - target[0]) ** 2)
            previous = episode.action[t - 1] if t > 0 else np.zeros_like(target[0])
            errors["previous_first"].append((previous - target[0]) ** 2)
    return {k: np.mean(v, 0) for k, v in errors.items()}


def closed_loop(model, data, env, seeds: list[int], execute: int, max_steps: int, generator,
                cfg_scale: float | None = None) -> dict:
    """Plays one episode per seed (one at a time): success, steps, closest gripper-object approach, final
    object-goal distance (metres)."""
    results = {"success": [], "steps": [], "reach": [], "goal_gap": []}
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        sim = env.unwrapped.sim().env
        reach, steps, success = np.inf, 0, False
        while steps < max_steps and not success:
            inputs = data.encode_observations([obs], [seed])
            chunk = model.act(inputs["prompt_input_ids"], inputs["prompt_attention_mask"], inputs["image_inputs"],
                              inputs["views"], inputs["state"], generator=generator, cfg_scale=cfg_scale)[0]
            for action in chunk[:execute].numpy():
                obs, _, terminated, truncated, info = env.step(action)
                steps += 1
                reach = min(reach, float(np.linalg.norm(sim.tcp_center - sim._get_pos_objects()[:3])))
                success = success or info["success"]
                if success or terminated or truncated or steps >= max_steps:
                    break
        results["success"].append(float(success))
        results["steps"].append(steps)
        results["reach"].append(reach)
        results["goal_gap"].append(float(np.linalg.norm(sim._get_pos_objects()[:3] - sim._target_pos)))
    return {k: float(np.mean(v)) for k, v in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a saved VLA directory")
    parser.add_argument("--ckpt", help="an arm's Lightning checkpoint instead")
    parser.add_argument("--demos", required=True)
    parser.add_argument("--prompt", default="unified", help="the spatial prompt the policy was trained with")
    parser.add_argument("--tasks", nargs="+", default=["pick-place-v3", "push-v3"])
    parser.add_argument("--held-out-combos", nargs="*", default=["pick-place-v3:purple", "push-v3:orange"])
    parser.add_argument("--held-out", type=int, default=6, help="fresh expert episodes of held-out layouts")
    parser.add_argument("--train-episodes", type=int, default=6, help="training episodes scored open loop")
    parser.add_argument("--episodes", type=int, default=4, help="closed-loop episodes per set")
    parser.add_argument("--execute", type=int, nargs="+", default=[4])
    parser.add_argument("--cfg", type=float, nargs="+", default=[None], help="guidance scales (default: the model's)")
    parser.add_argument("--spacing", default=None, help="DDIM timestep spacing (leading | trailing; default: the "
                        "model's, diffusers' leading)")
    parser.add_argument("--max-steps", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("overrides", nargs="*", help="config overrides the checkpoint's model was built with")
    args = parser.parse_args()
    torch.set_num_threads(1)

    model, processor = load_vla(args.model) if args.model else model_from_checkpoint(args.ckpt, args.overrides)
    model.eval()
    if args.spacing:  # VLAModel.sample builds its DDIM sampler from the training schedule's config
        import posttrain.models.vla as vla

        class Spaced(vla.DDIMScheduler):
            @classmethod
            def from_config(cls, config, **kwargs):
                return super().from_config(config, timestep_spacing=args.spacing, **kwargs)

        vla.DDIMScheduler = Spaced
    data = RobotDataModule(processor, path=args.demos, chunk=model.chunk, spatial_prompt=args.prompt)
    data.setup("fit")
    generator = torch.Generator().manual_seed(0)
    env_config = {"id": "metaworld", "tasks": args.tasks, "held_out": args.held_out_combos,
                  "image_size": args.image_size, "max_steps": args.max_steps}
    mean_action = np.asarray(data.demos.stats["action"]["mean"], dtype=np.float32)

    val_env = make_env(env_config, split="val")
    held_out, _ = collect_demos(val_env, [1_000_000 + 500 + i for i in range(args.held_out)])
    print("open-loop mean squared action error per dimension (dx, dy, dz, grip); first action of the chunk")
    for cfg in args.cfg:
        for name, episodes in (("train frames", data.demos.episodes[: args.train_episodes]),
                               ("held-out frames", held_out)):
            errors = open_loop(model, data, episodes, mean_action, generator, cfg_scale=cfg)
            print(f"  cfg {cfg} {name:16s} " + "  ".join(f"{k}={np.round(v, 3).tolist()} (mean {v.mean():.3f})"
                                                      for k, v in errors.items()), flush=True)

    train_env = make_env(env_config, split="train")
    train_seeds = [e.seed for e in data.demos.episodes[: args.episodes]]
    val_seeds = [1_000_000 + i for i in range(args.episodes)]
    print("closed loop (success, steps, closest gripper-object distance m, final object-goal distance m)")
    for cfg in args.cfg if args.episodes else ():
        for execute in args.execute:
            for name, env, seeds in (("train layouts", train_env, train_seeds),
                                     ("held-out layouts", val_env, val_seeds)):
                result = closed_loop(model, data, env, seeds, execute, args.max_steps, generator, cfg)
                print(f"  cfg {cfg} execute {execute}  {name:16s} "
                      + "  ".join(f"{k}={v:.3f}" for k, v in result.items()), flush=True)
    train_env.close()
    val_env.close()


if __name__ == "__main__":
    main()
