"""``vistoken train-reference``: train the synthetic benchmark's reference VLM from scratch."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import COUNT, POSITIVE, finite, progress

TRAIN_OUT = "vistoken-reference"


def add_parser(sub: Any) -> None:
    """The train-reference command. Defaults (None) leave vistoken.eval.train.TrainConfig's."""
    p = sub.add_parser(
        "train-reference",
        help="train the reference VLM of the synthetic benchmark (CPU, about an hour)",
        description="Train the reference LLaVA-OneVision of 'vistoken eval' from scratch on the "
        "synthetic benchmark's train split (seeded; the defaults are the recipe of the shipped "
        "checkpoint, vistoken.eval.train.TrainConfig). Writes the model and processor "
        "(save_pretrained format), train_log.jsonl and train_args.json to DIR; DIR/checkpoint.pt "
        "is written every --checkpoint-every steps, and the same command again resumes from it.",
    )
    p.add_argument("--out", type=Path, default=Path(TRAIN_OUT), metavar="DIR",
                   help=f"output folder (default: ./{TRAIN_OUT})")
    p.add_argument("--steps", type=POSITIVE, default=None, metavar="N",
                   help="optimiser steps (default: 2000)")
    p.add_argument("--batch-size", type=POSITIVE, default=None, metavar="B",
                   help="samples per step (default: 16)")
    p.add_argument("--lr", type=finite, default=None, help="peak learning rate (default: 2e-3)")
    p.add_argument("--seed", type=COUNT, default=None,
                   help="weight initialisation seed (default: 0)")
    p.add_argument("--max-minutes", type=finite, default=None, metavar="M",
                   help="stop (checkpoint and save) after M minutes of training")
    p.add_argument("--checkpoint-every", type=POSITIVE, default=None, metavar="N",
                   help="steps between checkpoints (default: 50)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def run(args: argparse.Namespace) -> int:
    from ..eval.train import TrainConfig, train

    given = {k: getattr(args, k) for k in ("steps", "batch_size", "lr", "seed", "max_minutes",
                                            "checkpoint_every")}
    cfg = TrainConfig(**{k: v for k, v in given.items() if v is not None})
    train(args.out, cfg, progress=progress(args))
    return 0
