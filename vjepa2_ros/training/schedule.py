"""The warmup-stable-decay learning-rate schedule of the official AC training (spec c)."""

from __future__ import annotations


def wsd_lr(step: int, steps: int, lr: float, lr_start: float, lr_final: float,
           warmup_steps: int, anneal_steps: int) -> float:
    """Learning rate of optimiser step `step` (0-based) of `steps`.

    Linear warmup lr_start -> lr over warmup_steps, constant lr, then linear anneal lr -> lr_final
    over the last anneal_steps.
    """
    if step < warmup_steps:
        return lr_start + (lr - lr_start) * step / warmup_steps
    anneal_start = steps - anneal_steps
    if step < anneal_start:
        return lr
    progress = min(1.0, (step - anneal_start) / max(anneal_steps, 1))
    return lr + (lr_final - lr) * progress
