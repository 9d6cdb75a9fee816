"""Train the reference VLM of the synthetic benchmark from scratch (``vistoken train-reference``).

The model is :func:`~vistoken.eval.reference.build_reference` (a real LLaVA-OneVision of 1.4 M
parameters); the data an endless, deterministic stream of ``train``-split samples of
:mod:`~vistoken.eval.synthetic` (batch ``b`` of step ``s`` holds samples
``s * b .. s * b + b - 1``, so the stream after a resume is the stream of one uninterrupted
run). The loss is next-token cross-entropy on the answer word only: the prompt (visual tokens,
question, ``Answer:``) is the context, and the logit at its last position is trained to be the
answer. Optimiser AdamW with linear warm-up and cosine decay; gradients clipped to norm 1.

Every ``checkpoint_every`` steps (and on Ctrl-C or the time limit) the run writes
``OUT/checkpoint.pt`` (weights, optimiser, step, log) atomically; a new run on the same ``OUT``
resumes from it. At the end ``OUT`` holds the model and processor in ``save_pretrained``
format, ``train_log.jsonl`` (one line per logged step and per validation) and
``train_args.json`` (the command's arguments).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from . import synthetic as syn
from .reference import FRAMES, SIZE, build_reference, prompts

__all__ = ["TrainConfig", "evaluate_split", "train"]


@dataclass
class TrainConfig:
    """Arguments of one training run (saved to ``train_args.json``)."""

    steps: int = 1500
    batch_size: int = 16
    lr: float = 2e-3
    warmup: int = 60
    weight_decay: float = 0.01
    seed: int = 0
    data_seed: int = 0
    frames: int = FRAMES
    size: int = SIZE
    checkpoint_every: int = 50
    log_every: int = 10
    val_every: int = 250
    val_samples: int = 120
    max_minutes: float | None = None
    bf16: bool = False


def _lr_at(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def _batch(processor: Any, cfg: TrainConfig, step: int) -> tuple[Any, list[syn.Sample]]:
    start = step * cfg.batch_size
    samples = [
        syn.sample("train", i, seed=cfg.data_seed, frames=cfg.frames, size=cfg.size)
        for i in range(start, start + cfg.batch_size)
    ]
    return prompts(processor, samples), samples


def _targets(processor: Any, samples: list[syn.Sample]) -> torch.Tensor:
    tok = processor.tokenizer
    return torch.tensor([tok.convert_tokens_to_ids(s.answer) for s in samples])


@torch.no_grad()
def evaluate_split(model: Any, processor: Any, samples: list[syn.Sample],
                   batch_size: int = 24) -> dict[str, Any]:
    """Accuracy of the argmax answer at the prompt's last position, overall and per type."""
    was_training = model.training
    model.eval()
    hits: dict[str, list[int]] = {}
    for i in range(0, len(samples), batch_size):
        chunk = samples[i:i + batch_size]
        logits = model(**prompts(processor, chunk), logits_to_keep=1).logits[:, -1]
        pred = logits.argmax(-1)
        for s, p, t in zip(chunk, pred.tolist(), _targets(processor, chunk).tolist(), strict=True):
            hits.setdefault(s.qtype, []).append(int(p == t))
    model.train(was_training)
    per = {q: sum(h) / len(h) for q, h in hits.items()}
    total = sum(sum(h) for h in hits.values()) / sum(len(h) for h in hits.values())
    return {"accuracy": total, "per_type": per}


def _save_checkpoint(path: Path, model: Any, opt: Any, step: int, log: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optim": opt.state_dict(), "step": step,
                "log": log}, tmp)
    os.replace(tmp, path)


def train(out: str | Path, cfg: TrainConfig, *, progress: bool = True,
          echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train (or resume) the reference model into ``out``; returns the final validation."""
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    echo = echo or (lambda m: print(m, file=sys.stderr))
    model, processor = build_reference(cfg.seed)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    rest = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0}],
        lr=cfg.lr, betas=(0.9, 0.98),
    )
    ckpt_path = out / "checkpoint.pt"
    step, log = 0, []
    if ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        step, log = int(state["step"]), list(state["log"])
        echo(f"resuming from {ckpt_path} at step {step}")
    (out / "train_args.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    val = syn.dataset("val", cfg.val_samples, seed=cfg.data_seed, frames=cfg.frames,
                      size=cfg.size)
    elapsed = sum(r.get("seconds", 0.0) for r in log if "loss" in r)
    t_start = time.monotonic()
    deadline = None if cfg.max_minutes is None else t_start + 60 * cfg.max_minutes - elapsed
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, desc="train-reference",
               unit="step", file=sys.stderr)
    window: list[tuple[float, int, int]] = []
    try:
        while step < cfg.steps:
            if deadline is not None and time.monotonic() > deadline:
                echo(f"time limit of {cfg.max_minutes} min reached at step {step}")
                break
            t0 = time.monotonic()
            for g in opt.param_groups:
                g["lr"] = _lr_at(cfg, step)
            batch, samples = _batch(processor, cfg, step)
            target = _targets(processor, samples)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                logits = model(**batch, logits_to_keep=1).logits[:, -1].float()
            loss = torch.nn.functional.cross_entropy(logits, target)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            hit = int((logits.argmax(-1) == target).sum())
            window.append((float(loss), hit, len(samples)))
            dt = time.monotonic() - t0
            if step % cfg.log_every == 0 or step == cfg.steps:
                n = sum(w[2] for w in window)
                rec = {"step": step, "loss": sum(w[0] for w in window) / len(window),
                       "train_accuracy": sum(w[1] for w in window) / n,
                       "lr": _lr_at(cfg, step - 1), "seconds": dt * len(window)}
                log.append(rec)
                bar.set_postfix(loss=f"{rec['loss']:.3f}", acc=f"{rec['train_accuracy']:.2f}")
                window = []
            bar.update(1)
            if step % cfg.val_every == 0:
                v = evaluate_split(model, processor, val)
                log.append({"step": step, "val": v})
                echo(f"step {step}: val accuracy {v['accuracy']:.3f} "
                     + " ".join(f"{q}={a:.2f}" for q, a in sorted(v["per_type"].items())))
            if step % cfg.checkpoint_every == 0:
                _save_checkpoint(ckpt_path, model, opt, step, log)
    except KeyboardInterrupt:
        _save_checkpoint(ckpt_path, model, opt, step, log)
        echo(f"interrupted: checkpoint at step {step} in {ckpt_path}; run again to resume")
        raise
    finally:
        bar.close()
    _save_checkpoint(ckpt_path, model, opt, step, log)
    v = evaluate_split(model, processor, val)
    log.append({"step": step, "val": v, "final": True})
    model.eval()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    with open(out / "train_log.jsonl", "w") as f:
        for rec in log:
            f.write(json.dumps(rec) + "\n")
    echo(f"step {step}: final val accuracy {v['accuracy']:.3f}; model saved to {out}")
    return v
