"""One greedy episode of a checkpoint as an animated GIF of the environment's rgb frames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from rllib_alma_mi.app.evaluation import (
    EpisodeStats,
    GreedyActor,
    evaluation_env_config,
    make_eval_env,
    restore,
    run_episode,
)


def save_gif(frames: list[np.ndarray], path: str | Path, fps: float) -> Path:
    """Write (H, W, 3) uint8 frames as a looping GIF at `fps` frames per second."""
    if len(frames) < 1:
        raise ValueError("save_gif: no frames to write")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
    images[0].save(
        path,
        save_all=True,
        append_images=images[1:],
        duration=max(20, round(1000 / fps)),
        loop=0,
        optimize=False,
    )
    return path


def record_episode(
    checkpoint: str | Path,
    out: str | Path,
    overrides: dict[str, Any] | None = None,
    seed: int = 0,
    fps: float | None = None,
) -> tuple[Path, int, EpisodeStats]:
    """Play one greedy episode and save it as a GIF; returns (path, frame count, stats).

    A frame is drawn whenever the workers are about to act (after each allocation and each
    env step), so each agent's current task shows as a line from the agent to its building.
    """
    _, algo = restore(checkpoint)
    try:
        env = make_eval_env(
            algo.config.env, evaluation_env_config(algo, overrides or {}), render=True
        )
        actor = GreedyActor(algo, env)
        frames: list[np.ndarray] = []
        stats = run_episode(env, actor, seed, on_frame=lambda e: frames.append(e.render()))
        rate = fps or env.base.metadata.get("render_fps", 5)
        env.close()
    finally:
        algo.stop()
    return save_gif(frames, out, rate), len(frames), stats
