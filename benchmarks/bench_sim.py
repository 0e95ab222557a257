"""Simulator throughput (env=metaworld_pick_place): environment steps/s with both views rendered (and projected),
physics alone, the render of one view with MuJoCo's default shadows for comparison, and expert demonstrations
collected per minute (episodes rendered, PNG-encoded into rows). Wall and CPU seconds (this process, every thread:
Mesa's software rasteriser may use several).

    python benchmarks/bench_sim.py [--sizes 64 96] [--steps 200] [--episodes 6]

Prints a table and writes benchmarks/results/bench_sim.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from posttrain.envs.demos import collect_demos, episode_rows  # noqa: E402
from posttrain.envs.metaworld import MetaWorldEnv, mujoco  # noqa: E402  (mujoco imported after MUJOCO_GL is set)

TASKS = ["pick-place-v3", "push-v3", "shelf-place-v3"]


def clocked(fn) -> tuple[float, float]:
    """(wall, CPU) seconds of one call (CPU: this process, all its threads; the machine is shared, so CPU seconds
    are the load-independent measure)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def run_steps(env: MetaWorldEnv, steps: int, render: bool) -> None:
    """`steps` expert steps over resets; `render=False` steps Meta-World's physics alone (no views, no projections)."""
    seed = 0
    env.reset(seed=seed)
    for _ in range(steps):
        if render:
            _, _, terminated, truncated, _ = env.step(env.expert_action())
        else:
            sim = env.sim()
            sim.obs, *_ = sim.env.step(env.expert_action())
            terminated = truncated = env.sim().env.curr_path_length >= 60
        if terminated or truncated:
            seed += 1
            env.reset(seed=seed)


def shadowed_renders(env: MetaWorldEnv, renders: int) -> None:
    sim = env.sim()
    renderer = sim.renderer("scene")
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 1
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 1
    try:
        for _ in range(renders):
            sim.render("scene")
    finally:
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--episodes", type=int, default=6)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "bench_sim.json"))
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        env = MetaWorldEnv(tasks=TASKS, image_size=size)
        run_steps(env, 20, render=True)  # warm-up: simulators, renderers, GL contexts
        for name, fn, count in (
            ("step + 2 views", lambda: run_steps(env, args.steps, render=True), args.steps),
            ("physics only", lambda: run_steps(env, args.steps, render=False), args.steps),
            ("1 view, shadows on", lambda: shadowed_renders(env, args.steps // 4), args.steps // 4),
            ("1 view, shadows off", lambda: [env.sim().render("scene") for _ in range(args.steps // 4)],
             args.steps // 4),
        ):
            wall, cpu = clocked(fn)
            rows.append({"size": size, "what": name, "per_s": count / wall, "per_cpu_s": count / cpu,
                         "ms_wall": 1e3 * wall / count, "ms_cpu": 1e3 * cpu / count})
        episodes: list = []
        wall, cpu = clocked(lambda: episodes.extend(
            row for e in collect_demos(env, list(range(args.episodes)))[0] for row in episode_rows(e, 0)))
        frames = len(episodes)
        frames = max(frames, 1)
        rows.append({"size": size, "what": "demos (episodes/min)", "per_s": args.episodes * 60 / wall,
                     "per_cpu_s": args.episodes * 60 / cpu, "ms_wall": 1e3 * wall / frames,
                     "ms_cpu": 1e3 * cpu / frames, "frames_per_episode": frames / args.episodes})
        env.close()
    print(f"{'size':>5} {'what':<22} {'per wall s':>11} {'per CPU s':>10} {'ms wall':>8} {'ms CPU':>7}"
          "  (demos: per minute; ms per frame)")
    for r in rows:
        print(f"{r['size']:>5} {r['what']:<22} {r['per_s']:>11.1f} {r['per_cpu_s']:>10.1f} {r['ms_wall']:>8.2f} "
              f"{r['ms_cpu']:>7.2f}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump({"rows": rows, "tasks": TASKS, "steps": args.steps, "episodes": args.episodes,
                   "mujoco_gl": os.environ.get("MUJOCO_GL"), "numpy": np.__version__}, handle, indent=1)


if __name__ == "__main__":
    main()
