"""What a bit-for-bit resume needs besides the weights (``train_state.pt`` of a checkpoint folder, DESIGN.md §4), and
putting it back: the step, the training step's optimizers and discriminator (``TrainStep.state_dict``), the RNG
states (``training.state``), the oracle selection and the number of processes.

The data position needs no state of its own: the loaders are pure functions of (seed, step, rank, world size).
Everything here is a tensor, number, string, list or dict, so ``torch.load(weights_only=True)`` reads it.
"""
from __future__ import annotations

from pathlib import Path

from ftadapt.checkpoint import load_checkpoint
from ftadapt.errors import CheckpointError, UsageError
from ftadapt.run_folder import LAST, checkpoint_folders, link_checkpoint
from ftadapt.training.distributed import DistEnv
from ftadapt.training.state import rng_state, set_rng_state
from ftadapt.training.step import TrainStep


def train_state(step: int, step_fn: TrainStep, oracle: dict | None, dist_env: DistEnv) -> dict:
    """Everything besides the model weights that a bit-for-bit resume after ``step`` needs."""
    return {"step": step, **step_fn.state_dict(), "rng": rng_state(step_fn.device), "oracle": oracle or {},
            "world_size": dist_env.world_size}


def restore(path: Path, step_fn: TrainStep, dist_env: DistEnv) -> tuple[int, dict | None]:
    """Load the checkpoint ``path`` into ``step_fn`` (G, D, both optimizers) and the RNGs; return its step and oracle
    selection. Refuses a checkpoint of another number of processes: the data order depends on it."""
    ckpt = load_checkpoint(path, with_train_state=True)
    state = ckpt.train_state
    world_size = int(state.get("world_size", 1))
    if world_size != dist_env.world_size:
        raise UsageError(f"--resume: {path} was written by a run of {world_size} process(es) and the data order "
                         f"depends on it; resume with {world_size} (torchrun --nproc-per-node {world_size}), not "
                         f"{dist_env.world_size}")
    missing = sorted(step_fn.state_dict().keys() - state.keys())
    if missing:
        raise CheckpointError(f"{path} has no {' or '.join(missing)} state; it was not written by a run of method "
                              f"{step_fn.cfg.method}")
    step_fn.model.load_state_dict(ckpt.state_dict)
    step_fn.load_state_dict(state)
    set_rng_state(state["rng"], step_fn.device)
    return int(state["step"]), state["oracle"] or None


def relink_last(out: Path, path: Path, step: int, gone: str) -> str:
    """After a resume restored ``path`` (step ``step``) because the newest checkpoint ``gone`` was deleted: point
    ``checkpoints/last`` at ``path`` again, and return the note that says so."""
    link_checkpoint(path, LAST)
    return (f"note: --resume: the newest checkpoint of {out}, checkpoints/{gone}, was deleted; continuing from the "
            f"newest complete one, {path.name} (step {step}), which checkpoints/{LAST} now points to")


def damaged_checkpoint(out: Path, path: Path, error: CheckpointError) -> CheckpointError:
    """The error for a resume whose newest checkpoint ``path`` cannot be read: what is wrong, and the previous complete
    checkpoint with how to continue from it (or that there is none)."""
    for candidate in reversed([p for p in checkpoint_folders(out) if p.name < path.name]):
        try:
            step = load_checkpoint(candidate, with_train_state=True).train_state["step"]
        except (CheckpointError, KeyError, TypeError):
            continue
        aside = out / f"{path.name}.damaged"
        return CheckpointError(f"--resume: the newest checkpoint cannot be used: {error}. The previous complete one "
                               f"is {candidate} (step {step}): move the damaged one out of the run (mv {path} "
                               f"{aside}) and rerun with --resume to continue from step {step}")
    return CheckpointError(f"--resume: the newest checkpoint cannot be used: {error}. No earlier checkpoint of {out} "
                           "is complete, so the run cannot be continued: start it again in a new folder")


__all__ = ["train_state", "restore", "relink_last", "damaged_checkpoint"]
