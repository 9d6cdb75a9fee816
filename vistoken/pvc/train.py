"""Train the tiny PVC on the synthetic benchmark (``vistoken train-pvc``), on one process or many.

The model starts from the trained reference VLM (:func:`vistoken.pvc.tiny.from_reference`),
as PVC's authors started from InternVL2-8B, and trains in two stages (the paper publishes
neither its stages nor its learning rates; these are this project's choices):

1. ``stage1_steps`` steps of the new parts (temporal attention, AdaLN, time MLP) and the new
   projector, the tower's own weights and the LLM frozen: the compressor learns to speak the
   LLM's language;
2. ``stage2_steps`` steps of everything, at the lower ``lr2``.

Data: an endless, deterministic stream of ``train``-split samples (videos and still images
together, question types round-robin); the global batch of step ``s`` is samples
``s * B .. s * B + B - 1`` of the stream (``data_seed`` selects it), whatever the number of
processes. The loss is cross-entropy of the answer word at the prompt's last position. Each
stage: AdamW, linear warm-up, cosine decay to 5%; gradients clipped to norm 1.

Many processes: under ``torchrun`` or ``accelerate launch`` (``WORLD_SIZE`` > 1) the run joins
a process group (:func:`vistoken.eval.distributed.context`: NCCL on CUDA, Gloo on the CPU),
each rank takes its contiguous ``B / world`` share of the global batch, the model is wrapped
in ``DistributedDataParallel`` (gradients averaged, so a step is the one-process step on the
whole global batch), and rank 0 logs, validates and writes the checkpoints. FSDP, for a model
that does not fit one GPU, is documented in the README (``accelerate`` with an FSDP config);
the tiny model needs none.

``OUT/checkpoint.pt`` is written every ``checkpoint_every`` steps, on Ctrl-C and at the time
limit; the same command again resumes from it (refused when the arguments differ). At the end
``OUT`` holds the model (``save_pretrained``), ``pvc_processor.json``, ``train_log.jsonl`` and
``train_args.json``.
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

from ..eval import synthetic as syn
from ..eval.reference import FRAMES, SIZE
from ..eval.train import _targets, evaluate_split, recipe

__all__ = ["PVCTrainConfig", "evaluate", "train_pvc"]


@dataclass
class PVCTrainConfig:
    """Arguments of one ``train-pvc`` run (saved to ``train_args.json``)."""

    #: the reference model to start from: "shipped" (the package's), "untrained" (a freshly
    #: initialised one, for tests) or a ``save_pretrained`` folder
    base: str = "shipped"
    tokens_per_frame: int = 49
    #: False: the no-progressive control (no temporal attention, no AdaLN)
    progressive: bool = True
    image_repeats: int = 4
    stage1_steps: int = 150
    stage2_steps: int = 350
    #: the global batch (split over the processes)
    batch_size: int = 16
    lr1: float = 1e-3
    lr2: float = 3e-4
    warmup: int = 20
    weight_decay: float = 0.01
    seed: int = 0
    data_seed: int = 1
    frames: int = FRAMES
    size: int = SIZE
    checkpoint_every: int = 50
    log_every: int = 10
    val_every: int = 100
    val_samples: int = 60
    max_minutes: float | None = None
    qtypes: tuple[str, ...] = syn.QTYPES

    @property
    def steps(self) -> int:
        return self.stage1_steps + self.stage2_steps


def check_config(cfg: PVCTrainConfig, world: int = 1) -> None:
    """ValueError naming the first argument of ``cfg`` that cannot train."""
    for name in ("batch_size", "warmup", "checkpoint_every", "log_every", "val_every",
                 "val_samples", "frames", "image_repeats", "tokens_per_frame"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.stage1_steps < 0 or cfg.stage2_steps < 0 or cfg.steps < 1:
        raise ValueError(f"stage1_steps and stage2_steps must be >= 0 and not both 0, got "
                         f"{cfg.stage1_steps}, {cfg.stage2_steps}")
    if not (cfg.lr1 > 0 and cfg.lr2 > 0):
        raise ValueError(f"lr1 and lr2 must be > 0, got {cfg.lr1}, {cfg.lr2}")
    if cfg.max_minutes is not None and not cfg.max_minutes > 0:
        raise ValueError(f"max_minutes must be > 0, got {cfg.max_minutes}")
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} does not split over {world} processes; "
                         f"pass a multiple of {world}")
    for q in cfg.qtypes:
        if q not in syn.QTYPES:
            raise ValueError(f"unknown qtype {q!r}; expected one of {', '.join(syn.QTYPES)}")
        if q != "image_detail" and syn.MIN_FRAMES[q] > cfg.frames:
            raise ValueError(f"qtype {q!r} needs frames >= {syn.MIN_FRAMES[q]}, got {cfg.frames}")


def _base(cfg: PVCTrainConfig) -> tuple[Any, Any]:
    """The reference model the PVC starts from, and its processor."""
    from ..eval.reference import build_reference, load_reference

    if cfg.base == "shipped":
        return load_reference()
    if cfg.base == "untrained":
        return build_reference(cfg.seed)
    return load_reference(cfg.base)


def _lr_at(cfg: PVCTrainConfig, step: int) -> float:
    """Each stage: linear warm-up over ``warmup`` steps, cosine to 5% at the stage's end."""
    if step < cfg.stage1_steps:
        peak, i, n = cfg.lr1, step, cfg.stage1_steps
    else:
        peak, i, n = cfg.lr2, step - cfg.stage1_steps, cfg.stage2_steps
    if i < cfg.warmup:
        return peak * (i + 1) / cfg.warmup
    frac = (i - cfg.warmup) / max(1, n - cfg.warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def stage_params(model: Any, stage: int) -> list[torch.nn.Parameter]:
    """The parameters a stage trains (stage 1: new parts and projector; 2: all); the others
    are frozen (``requires_grad=False``)."""
    if stage == 1:
        train = {id(p) for p in model.encoder.new_parameters()}
        train |= {id(p) for p in model.encoder.projector.parameters()}
        if model.encoder.merge is not None:
            train |= {id(p) for p in model.encoder.merge.parameters()}
    else:
        train = {id(p) for p in model.parameters()}
    params = []
    for p in model.parameters():
        p.requires_grad_(id(p) in train)
        if id(p) in train:
            params.append(p)
    return params


def _optimizer(params: list[torch.nn.Parameter], cfg: PVCTrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0}],
        lr=cfg.lr1, betas=(0.9, 0.98),
    )


def batch_samples(cfg: PVCTrainConfig, step: int) -> list[syn.Sample]:
    """The global batch of ``step`` (the same for any number of processes)."""
    k = len(cfg.qtypes)
    start = step * cfg.batch_size
    return [syn.sample("train", i // k, cfg.qtypes[i % k], seed=cfg.data_seed,
                       frames=cfg.frames, size=cfg.size)
            for i in range(start, start + cfg.batch_size)]


def evaluate(model: Any, processor: Any, samples: list[syn.Sample],
             batch_size: int = 12) -> dict[str, Any]:
    """Accuracy of the argmax answer at the prompt's last position, overall and per type."""
    from .tiny import prompts

    return evaluate_split(model, processor, samples, batch_size, build=prompts)


def train_pvc(out: str | Path, cfg: PVCTrainConfig, *, progress: bool = True,
              echo: Callable[[str], None] | None = None, device: Any = None) -> dict[str, Any]:
    """Train (or resume) a tiny PVC into ``out``; returns the final validation (rank 0; the
    other ranks return ``{}``)."""
    from tqdm import tqdm

    from ..eval.distributed import context, env_world
    from .tiny import from_reference, prompts, save

    check_config(cfg, env_world())
    out = Path(out)
    echo = echo or (lambda m: print(m, file=sys.stderr))
    with context(device) as ctx:
        main = ctx.main
        if main:
            out.mkdir(parents=True, exist_ok=True)
        base, base_processor = _base(cfg)
        model, processor = from_reference(base, reference_processor=base_processor,
                                          tokens_per_frame=cfg.tokens_per_frame,
                                          progressive=cfg.progressive,
                                          image_repeats=cfg.image_repeats, seed=cfg.seed)
        model.to(ctx.device).train()
        ckpt_path = out / "checkpoint.pt"
        step, log, opt_state = 0, [], None
        if ckpt_path.is_file():
            state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
            if recipe(state.get("config")) != recipe(asdict(cfg)):
                raise ValueError(
                    f"{ckpt_path} was written by a run with other arguments "
                    f"({state.get('config')}); resume with the same arguments or train into "
                    "another folder")
            model.load_state_dict(state["model"])
            step, log, opt_state = int(state["step"]), list(state["log"]), state["optim"]
            if main:
                echo(f"resuming from {ckpt_path} at step {step}")
        if main:
            (out / "train_args.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
        val = syn.dataset("val", cfg.val_samples, seed=cfg.data_seed, frames=cfg.frames,
                          size=cfg.size, qtypes=cfg.qtypes) if main else []
        share = cfg.batch_size // ctx.world
        lo = ctx.rank * share

        def stage_of(s: int) -> int:
            return 1 if s < cfg.stage1_steps else 2

        def setup(stage: int) -> tuple[Any, Any, list[torch.nn.Parameter]]:
            # a new DistributedDataParallel per stage (it reduces the parameters that need
            # gradients when it is made); every trained parameter must get a gradient
            # every step (DDP refuses unused ones; the tiny model has none)
            params = stage_params(model, stage)
            opt = _optimizer(params, cfg)
            wrapped = model
            if ctx.world > 1:
                wrapped = torch.nn.parallel.DistributedDataParallel(
                    model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
            return wrapped, opt, params

        stage = stage_of(step)
        wrapped, opt, params = setup(stage)
        if opt_state is not None and opt_state.get("stage") == stage:
            opt.load_state_dict(opt_state["state"])

        def save_checkpoint() -> None:
            if not main:
                return
            tmp = ckpt_path.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "step": step, "log": log,
                        "optim": {"stage": stage, "state": opt.state_dict()},
                        "config": asdict(cfg)}, tmp)
            os.replace(tmp, ckpt_path)

        elapsed = max((r.get("elapsed", 0.0) for r in log), default=0.0)
        t_start = time.monotonic()
        deadline = None if cfg.max_minutes is None else t_start + 60 * cfg.max_minutes - elapsed
        bar = tqdm(total=cfg.steps, initial=step, disable=not (progress and main),
                   desc="train-pvc", unit="step", file=sys.stderr)
        window: list[tuple[float, float, float]] = []
        try:
            while step < cfg.steps:
                stop = deadline is not None and time.monotonic() > deadline
                if ctx.world > 1:  # every rank stops at the same step
                    flag = torch.tensor([float(stop)], device=ctx.device)
                    torch.distributed.all_reduce(flag)
                    stop = bool(flag.item())
                if stop:
                    if main:
                        echo(f"time limit of {cfg.max_minutes} min reached at step {step}")
                    break
                if stage_of(step) != stage:
                    stage = stage_of(step)
                    del wrapped  # the old wrapper's gradient hooks go with it
                    wrapped, opt, params = setup(stage)
                t0 = time.monotonic()
                for g in opt.param_groups:
                    g["lr"] = _lr_at(cfg, step)
                samples = batch_samples(cfg, step)[lo:lo + share]
                batch = prompts(processor, samples).to(ctx.device)
                logits = wrapped(**batch, logits_to_keep=1).logits[:, -1].float()
                target = _targets(processor, samples, ctx.device)
                loss = torch.nn.functional.cross_entropy(logits, target)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                stats = torch.tensor([float(loss.detach()) * len(samples),
                                      float((logits.argmax(-1) == target).sum())],
                                     device=ctx.device)
                if ctx.world > 1:
                    torch.distributed.all_reduce(stats)
                window.append((float(stats[0]) / cfg.batch_size,
                               float(stats[1]) / cfg.batch_size, time.monotonic() - t0))
                if main and (step % cfg.log_every == 0 or step == cfg.steps):
                    rec = {"step": step, "stage": stage,
                           "loss": sum(w[0] for w in window) / len(window),
                           "train_accuracy": sum(w[1] for w in window) / len(window),
                           "lr": _lr_at(cfg, step - 1), "seconds": sum(w[2] for w in window),
                           "elapsed": elapsed + time.monotonic() - t_start}
                    log.append(rec)
                    if not progress:
                        echo(json.dumps({k: round(v, 5) for k, v in rec.items()}))
                    bar.set_postfix(loss=f"{rec['loss']:.3f}", acc=f"{rec['train_accuracy']:.2f}")
                if step % cfg.log_every == 0 or step == cfg.steps:
                    window = []
                bar.update(1)
                if main and step % cfg.val_every == 0:
                    v = evaluate(model, processor, val)
                    log.append({"step": step, "val": v,
                                "elapsed": elapsed + time.monotonic() - t_start})
                    echo(f"step {step}: val accuracy {v['accuracy']:.3f} "
                         + " ".join(f"{q}={a:.2f}" for q, a in sorted(v["per_type"].items())))
                if step % cfg.checkpoint_every == 0:
                    save_checkpoint()
        except KeyboardInterrupt:
            save_checkpoint()
            if main:
                echo(f"interrupted: checkpoint at step {step} in {ckpt_path}; run again to resume")
            raise
        finally:
            bar.close()
        save_checkpoint()
        if not main:
            return {}
        v = evaluate(model, processor, val)
        log.append({"step": step, "val": v, "final": True})
        model.eval()
        save(model, processor, out)
        with open(out / "train_log.jsonl", "w") as f:
            for rec in log:
                f.write(json.dumps(rec) + "\n")
        echo(f"step {step}: final val accuracy {v['accuracy']:.3f}; model saved to {out}")
        return v
