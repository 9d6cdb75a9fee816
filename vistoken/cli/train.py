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
                   help="optimiser steps (default: 2100)")
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


PVC_OUT = "vistoken-pvc"


def add_pvc_parser(sub: Any) -> None:
    """The train-pvc command. Defaults (None) leave vistoken.pvc.train.PVCTrainConfig's."""
    p = sub.add_parser(
        "train-pvc",
        help="train a tiny PVC from the reference VLM (CPU; torchrun/accelerate for several)",
        description="Convert the reference VLM into PVC (progressive encoder, 49 tokens per "
        "frame) and train it on the synthetic benchmark in two stages: the new parts and the "
        "projector with the tower and LLM frozen, then everything (vistoken.pvc.train). Runs "
        "unchanged under 'torchrun --nproc_per_node P -m vistoken train-pvc ...' or "
        "'accelerate launch -m vistoken train-pvc ...' (DDP; --batch-size is the global "
        "batch). Writes the model (save_pretrained), pvc_processor.json, train_log.jsonl and "
        "train_args.json to DIR; the same command again resumes from DIR/checkpoint.pt.",
    )
    p.add_argument("--out", type=Path, default=Path(PVC_OUT), metavar="DIR",
                   help=f"output folder (default: ./{PVC_OUT})")
    p.add_argument("--base", default=None, metavar="MODEL",
                   help="the reference model to start from: 'shipped' (default), 'untrained' "
                   "or a folder written by train-reference")
    p.add_argument("--tokens-per-frame", type=POSITIVE, default=None, metavar="N",
                   help="visual tokens per frame: 49 (default, 4x compression) or 196 (none)")
    p.add_argument("--no-progressive", dest="progressive", action="store_false", default=None,
                   help="the control: no temporal attention, no AdaLN")
    p.add_argument("--stage1-steps", type=COUNT, default=None, metavar="N",
                   help="steps of stage 1 (new parts and projector; default: 150)")
    p.add_argument("--stage2-steps", type=COUNT, default=None, metavar="N",
                   help="steps of stage 2 (everything; default: 350)")
    p.add_argument("--batch-size", type=POSITIVE, default=None, metavar="B",
                   help="global samples per step (default: 16)")
    p.add_argument("--frames", type=POSITIVE, default=None, metavar="T",
                   help="frames per training video (default: 16; fewer train only the question "
                   "types that many frames can show)")
    p.add_argument("--seed", type=COUNT, default=None,
                   help="seed of the new parts' initial weights (default: 0)")
    p.add_argument("--max-minutes", type=finite, default=None, metavar="M",
                   help="stop (checkpoint and save) after M minutes of training")
    p.add_argument("--checkpoint-every", type=POSITIVE, default=None, metavar="N",
                   help="steps between checkpoints (default: 50)")
    p.add_argument("--log-every", type=POSITIVE, default=None, metavar="N",
                   help="steps per log line (default: 10)")
    p.add_argument("--device", default=None,
                   help="torch device (default: cuda when available, else cpu)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def run_pvc(args: argparse.Namespace) -> int:
    from ..pvc.train import PVCTrainConfig, train_pvc

    given = {k: getattr(args, k) for k in (
        "base", "tokens_per_frame", "progressive", "stage1_steps", "stage2_steps", "batch_size",
        "frames", "seed", "max_minutes", "checkpoint_every", "log_every")}
    given = {k: v for k, v in given.items() if v is not None}
    if "frames" in given:  # short clips: the question types they can show
        from ..eval.synthetic import MIN_FRAMES, QTYPES

        given["qtypes"] = tuple(q for q in QTYPES if MIN_FRAMES[q] <= given["frames"])
    cfg = PVCTrainConfig(**given)
    train_pvc(args.out, cfg, progress=progress(args), device=args.device)
    return 0
