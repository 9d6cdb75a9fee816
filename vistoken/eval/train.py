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

import numpy as np
import torch

from . import synthetic as syn
from .reference import FRAMES, SIZE, build_reference, prompts

__all__ = ["TrainConfig", "evaluate_split", "train"]


@dataclass
class TrainConfig:
    """Arguments of one training run (saved to ``train_args.json``)."""

    steps: int = 2100
    batch_size: int = 16
    lr: float = 2e-3
    warmup: int = 30
    #: the learning rate is constant from the warm-up to this share of the steps, then
    #: decays on a cosine to 5% at the end
    decay_from: float = 0.6
    weight_decay: float = 0.01
    seed: int = 0
    data_seed: int = 0
    frames: int = FRAMES
    size: int = SIZE
    checkpoint_every: int = 50
    log_every: int = 10
    val_every: int = 250
    val_samples: int = 60
    max_minutes: float | None = None
    bf16: bool = False
    aux_weight: float = 1.0
    #: weight of the auxiliary per-frame *state* heads on the LLM (``frame_states``): the
    #: hidden state at the last visual token of each frame predicts what the clip showed up to
    #: that frame (first colour, the colour that appeared first, flashes so far, direction so far,
    #: the digit seen so far), dense supervision of the temporal bookkeeping the answers need
    state_weight: float = 1.0
    #: the state heads read every visual token (a frame's tokens: the state through the
    #: frame before), not only the frame ends and the newline
    state_every_token: bool = False
    #: weight of the per-token state heads on the LLM (``token_states``): at each visual
    #: token that shows the order or motion object, what causal attention *by content* can
    #: know there (no other shape seen yet; which way the object went since frame 0).
    #: Off by default: in a 300-step A/B (10 frames, the four temporal types) the heads
    #: learnt (0.78 / 0.52 token accuracy) but the answers did not move (val 0.438 vs 0.450)
    token_weight: float = 0.0
    #: (until_step, frames) phases before the full ``frames``: short clips first, so that the
    #: LLM learns to find the few tokens that matter among fewer of them; a phase trains only
    #: the types its clip length can show (``synthetic.MIN_FRAMES``)
    curriculum: tuple[tuple[int, int], ...] = ((300, 2), (600, 4), (1300, 10))
    #: (from_step, to_step): the share of *background* visual tokens the LLM may attend to
    #: ramps from 0 to 1 between these steps (1 after): early on it sees only the tokens
    #: that hold an object or the glyph (``patch_labels``), so it learns to read them before
    #: it must learn to find them among the background (the rest are masked as keys)
    reveal: tuple[int, int] = (200, 900)
    #: the question types trained (and validated) on
    qtypes: tuple[str, ...] = syn.QTYPES


#: Classes of the auxiliary object head: nothing, or a palette colour x shape.
_OBJ_CLASSES = ("none",) + tuple(f"{c}_{s}" for c in syn.PALETTE for s in ("square", "circle"))
#: Classes of the auxiliary glyph head: nothing, or the plated (target) glyph's character.
_GLYPH_CLASSES = ("none",) + tuple(syn.FONT)
#: A patch is labelled with a thing when the thing covers at least this share of its pixels.
_COVER = 0.25


def patch_labels(scene: dict[str, Any], patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-patch labels of a scene for the auxiliary heads: (T, P) object and glyph classes.

    Drawn from the scene description with the renderer's own shape geometry: a patch's
    object class is the palette object (colour, shape) covering the most of its pixels (at
    least :data:`_COVER`, else "none"); its glyph class is the target glyph's character
    where the glyph's plate covers at least :data:`_COVER` of it.
    """
    from PIL import Image, ImageDraw

    frames, size = int(scene["frames"]), int(scene["size"])
    g = size // patch
    obj = np.zeros((frames, size, size), np.int64)
    for t in range(frames):
        img = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(img)
        for o in scene["objects"]:
            name = o["colour"][t]
            if name is not None:
                x, y = o["xy"][t]
                cls = _OBJ_CLASSES.index(f"{name}_{o['shape']}")
                syn._draw_shape(draw, o["shape"], x, y, o["extent"], cls)
        obj[t] = np.asarray(img)
    glyph = np.zeros((frames, size, size), np.int64)
    for gl in scene["glyphs"]:
        if gl["plate"]:
            s = gl["scale"]
            glyph[gl["frame"], gl["y"]:gl["y"] + 9 * s, gl["x"]:gl["x"] + 7 * s] = (
                _GLYPH_CLASSES.index(gl["char"]))

    def per_patch(m: np.ndarray, k: int) -> torch.Tensor:
        cells = m[:, :g * patch, :g * patch].reshape(frames, g, patch, g, patch)
        cells = cells.transpose(0, 1, 3, 2, 4).reshape(frames, g * g, patch * patch)
        counts = np.stack([(cells == c).sum(-1) for c in range(k)], -1)  # (T, P, k)
        counts[..., 0] = 0
        best = counts.argmax(-1)
        hit = counts.max(-1) >= _COVER * patch * patch
        return torch.from_numpy(np.where(hit, best, 0))

    return per_patch(obj, len(_OBJ_CLASSES)), per_patch(glyph, len(_GLYPH_CLASSES))


class AuxHeads(torch.nn.Module):
    """Linear probes on the vision tower's selected features, trained beside the answer loss
    (dense per-patch supervision that makes the from-scratch tower learn within the budget);
    they are not part of the saved model."""

    def __init__(self, dim: int, grid: int) -> None:
        super().__init__()
        self.grid = grid
        self.obj = torch.nn.Linear(dim, len(_OBJ_CLASSES))
        self.glyph = torch.nn.Linear(dim, len(_GLYPH_CLASSES))
        # where an object patch is (its row and column in the patch grid): keeps the position
        # in the object tokens' features, which motion needs after the 2x2 pooling
        self.row = torch.nn.Linear(dim, grid)
        self.col = torch.nn.Linear(dim, grid)

    def loss(self, feats: torch.Tensor, obj: torch.Tensor, glyph: torch.Tensor) -> torch.Tensor:
        # the mean over labelled patches plus half the mean over empty ones: labelled patches
        # are rare (a glyph covers a few patches of one frame), a plain or even 5x-weighted
        # mean is dominated by the background and the tower never learns to read the glyph
        def ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            per = torch.nn.functional.cross_entropy(logits.flatten(0, -2), y.flatten(),
                                                    reduction="none")
            on = y.flatten() > 0
            out = 0.5 * per[~on].mean() if (~on).any() else per.sum() * 0
            return out + per[on].mean() if on.any() else out

        total = ce(self.obj(feats), obj) + ce(self.glyph(feats), glyph)
        on = obj > 0
        if on.any():
            cell = torch.arange(feats.shape[1], device=feats.device).expand(feats.shape[:2])
            where = feats[on]
            total = total + torch.nn.functional.cross_entropy(
                self.row(where), (cell // self.grid)[on]) + torch.nn.functional.cross_entropy(
                self.col(where), (cell % self.grid)[on])
        return total


#: The LLM's per-frame state heads: name -> classes (see :func:`frame_states`).
STATE_HEADS: dict[str, tuple[str, ...]] = {
    "digit_seen": ("none",) + syn.ANSWERS["detail"],
    "first_colour": tuple(syn.PALETTE),
    "colour_now": tuple(syn.PALETTE),
    # order: the colour of the object that showed first, once it has ("none" before)
    "first_seen": ("none",) + tuple(syn.PALETTE),
    "flashes": tuple(str(i) for i in range(6)),
    "direction": syn.ANSWERS["motion"],
    # the single target object's cell of the LLM's 7 x 7 grid (centre) in the first frame and
    # now: what the direction is computed from
    "first_cell": tuple(str(i) for i in range(49)),
    "cell_now": tuple(str(i) for i in range(49)),
}
#: Side of the LLM's per-frame token grid (the 2 x 2 pooled 14 x 14 patches).
_CELLS = 7
_IGNORE = -100


def frame_states(scene: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Per-frame labels of the LLM's state heads: name -> (T,) class ids, -100 where the head
    says nothing about the scene (other question types; no displacement yet for
    ``direction``). Each frame's label depends on frames 0..t only, as causal attention
    allows."""
    frames = int(scene["frames"])
    qtype = scene["qtype"]
    out = {name: torch.full((frames,), _IGNORE, dtype=torch.long) for name in STATE_HEADS}
    if qtype == "detail":
        g = next(g for g in scene["glyphs"] if g["plate"])
        ids = STATE_HEADS["digit_seen"]
        out["digit_seen"] = torch.tensor(
            [ids.index(g["char"]) if t >= g["frame"] else 0 for t in range(frames)])
    elif qtype == "colour_at_time":
        colours = scene["objects"][0]["colour"]
        names = STATE_HEADS["first_colour"]
        out["first_colour"] = torch.full((frames,), names.index(colours[0]))
        out["colour_now"] = torch.tensor([names.index(c) for c in colours])
    elif qtype == "order":
        # onset: the first frame an object shows in (``frames`` if it never does)
        onset = {o["shape"]: next((t for t, c in enumerate(o["colour"]) if c is not None),
                                  frames) for o in scene["objects"]}
        first = next(o for o in scene["objects"] if o["shape"] == min(onset, key=onset.get))
        ids = STATE_HEADS["first_seen"]
        shown = [c for c in first["colour"] if c is not None]  # none: nothing shown yet
        colour = ids.index(shown[0]) if shown else 0
        out["first_seen"] = torch.tensor(
            [colour if t >= onset[first["shape"]] else 0 for t in range(frames)])
    elif qtype == "count":
        on = [c == syn.FLASH for c in scene["objects"][0]["colour"]]
        runs, seen = [], 0
        for t, v in enumerate(on):
            seen += int(v and (t == 0 or not on[t - 1]))
            runs.append(seen)
        out["flashes"] = torch.tensor(runs)
    if qtype in ("colour_at_time", "count", "motion"):
        obj = scene["objects"][0]
        side = int(scene["size"]) / _CELLS
        cells = [min(_CELLS - 1, int((y + obj["extent"] / 2) // side)) * _CELLS
                 + min(_CELLS - 1, int((x + obj["extent"] / 2) // side)) for x, y in obj["xy"]]
        out["first_cell"] = torch.full((frames,), cells[0])
        out["cell_now"] = torch.tensor(cells)
    if qtype == "motion":
        xy = scene["objects"][0]["xy"]
        ids = STATE_HEADS["direction"]
        lab = []
        for t in range(frames):
            dx, dy = xy[t][0] - xy[0][0], xy[t][1] - xy[0][1]
            if dx == dy == 0:
                lab.append(_IGNORE)
            elif abs(dx) >= abs(dy):
                lab.append(ids.index("right" if dx > 0 else "left"))
            else:
                lab.append(ids.index("down" if dy > 0 else "up"))
        out["direction"] = torch.tensor(lab)
    return out


#: The LLM's per-token state heads: name -> classes (see :func:`token_states`).
TOKEN_HEADS: dict[str, tuple[str, ...]] = {
    # order: at a token of shape S, "S" while the other shape has shown in no frame so far,
    # else "both": only the first object's tokens before the second's onset say their shape,
    # and the answer is the colour of any token that does (found by content, not by time)
    "alone_so_far": ("square", "circle", "both"),
    # motion: at a target-object token of frame t >= 1, the direction from its frame-0 place:
    # attention over the object's earlier tokens (by content) gives where it was
    "moved": syn.ANSWERS["motion"],
}


def token_states(scene: dict[str, Any], obj: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-token labels of the LLM's token heads: name -> (T, P / 4) class ids on the 2 x 2
    pooled token grid, -100 where a token shows no labelled object or the head says nothing.
    ``obj``: the scene's (T, P) :func:`patch_labels` object classes. Causal: a frame's labels
    depend on frames 0..t only."""
    frames = int(scene["frames"])
    t_, p = obj.shape
    g = math.isqrt(p)
    pooled = torch.nn.functional.max_pool2d(obj.reshape(t_, 1, g, g).float(), 2,
                                            ceil_mode=True).reshape(t_, -1).long()
    cells = pooled.shape[1]
    out = {name: torch.full((frames, cells), _IGNORE, dtype=torch.long) for name in TOKEN_HEADS}
    qtype = scene["qtype"]
    if qtype == "order":
        onset = {o["shape"]: next((t for t, c in enumerate(o["colour"]) if c is not None),
                                  frames) for o in scene["objects"]}
        ids = TOKEN_HEADS["alone_so_far"]
        shape_of = torch.tensor([-1] + [ids.index(c.split("_")[1]) for c in _OBJ_CLASSES[1:]])
        shape = shape_of[pooled]  # (T, cells): 0 square, 1 circle, -1 nothing
        t = torch.arange(frames)[:, None]
        other_on = torch.tensor([onset["circle"], onset["square"]])  # by shape id
        alone = t < other_on[shape.clamp(min=0)]
        lab = torch.where(alone, shape, torch.full_like(shape, ids.index("both")))
        out["alone_so_far"] = torch.where(shape >= 0, lab, torch.full_like(shape, _IGNORE))
    elif qtype == "motion":
        moved = frame_states(scene)["direction"]  # (T,), -100 before any displacement
        out["moved"] = torch.where(pooled > 0, moved[:, None].expand(-1, cells),
                                   torch.full_like(pooled, _IGNORE))
    return out


class TokenHeads(torch.nn.Module):
    """Linear heads on the LLM's hidden state at every video token, trained on
    :func:`token_states` beside the answer loss; not part of the saved model."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.heads = torch.nn.ModuleDict(
            {name: torch.nn.Linear(dim, len(c)) for name, c in TOKEN_HEADS.items()})

    def loss(self, hidden: torch.Tensor, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        """``hidden`` (N, K, D) at the videos' frame tokens, ``labels`` name -> (N, K)."""
        total = hidden.new_zeros(())
        for name, head in self.heads.items():
            y = labels[name]
            on = y != _IGNORE
            if on.any():
                total = total + torch.nn.functional.cross_entropy(head(hidden[on]), y[on])
        return total


def _video_tokens(batch: Any, samples: list[syn.Sample], config: Any, hidden: torch.Tensor,
                  labels: list[tuple[torch.Tensor, torch.Tensor]],
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
    """The LLM hidden states at every frame token of the batch's order and motion videos
    (N, T * tokens, D; the newline left out) and their :func:`token_states` (N, T * tokens);
    None when the batch holds none."""
    rows = [i for i, s in enumerate(samples) if s.qtype in ("order", "motion")]
    if not rows:
        return None
    index, out = [], {name: [] for name in TOKEN_HEADS}
    for i in rows:
        cols = (batch["input_ids"][i] == config.video_token_id).nonzero().squeeze(1)
        index.append(cols[:-1])
        st = token_states(samples[i].scene, labels[i][0])
        for name in TOKEN_HEADS:
            out[name].append(st[name].flatten())
    picked = hidden[torch.tensor(rows)[:, None], torch.stack(index)]
    return picked, {name: torch.stack(v) for name, v in out.items()}


class StateHeads(torch.nn.Module):
    """Linear heads on the LLM's hidden state at the last visual token of each frame, trained
    on :func:`frame_states` beside the answer loss; not part of the saved model."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.heads = torch.nn.ModuleDict(
            {name: torch.nn.Linear(dim, len(c)) for name, c in STATE_HEADS.items()})

    def loss(self, hidden: torch.Tensor, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        """``hidden`` (N, T, D) at the frames' last tokens, ``labels`` name -> (N, T)."""
        total = hidden.new_zeros(())
        for name, head in self.heads.items():
            y = labels[name]
            if (y != _IGNORE).any():
                total = total + torch.nn.functional.cross_entropy(
                    head(hidden).flatten(0, 1), y.flatten(), ignore_index=_IGNORE)
        return total


def _every_token(batch: Any, samples: list[syn.Sample], config: Any,
                 hidden: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
    """Like :func:`_frame_ends`, at every visual token of every video: a frame's last token
    and the newline carry the state through that frame (as there), every other token of
    frame t the state through frame t - 1 (what it can know whatever its place in the frame;
    frame 0's other tokens are unlabelled). (N, T * tokens + 1, D) and labels (N, same)."""
    rows = [i for i, s in enumerate(samples) if s.qtype != "image_detail"]
    if not rows:
        return None
    index, labels = [], {name: [] for name in STATE_HEADS}
    for i in rows:
        cols = (batch["input_ids"][i] == config.video_token_id).nonzero().squeeze(1)
        frames = int(samples[i].scene["frames"])
        tokens = (cols.numel() - 1) // frames
        index.append(cols)
        st = frame_states(samples[i].scene)
        for name in STATE_HEADS:
            y = st[name]
            before = torch.cat([torch.full((1,), _IGNORE, dtype=y.dtype), y[:-1]])
            grid = before[:, None].expand(frames, tokens).clone()
            grid[:, -1] = y
            labels[name].append(torch.cat([grid.flatten(), y[-1:]]))
    picked = hidden[torch.tensor(rows)[:, None], torch.stack(index)]
    return picked, {name: torch.stack(v) for name, v in labels.items()}


def _frame_ends(batch: Any, samples: list[syn.Sample], config: Any,
                hidden: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
    """The LLM hidden states at each video frame's last visual token and at the newline token
    after the video, (N, T + 1, D), and the videos' :func:`frame_states` stacked (N, T + 1;
    the newline is labelled with the last frame's state, the clip's summary the answer can
    read); None when the batch holds no video."""
    rows = [i for i, s in enumerate(samples) if s.qtype != "image_detail"]
    if not rows:
        return None
    per = []
    for i in rows:
        cols = (batch["input_ids"][i] == config.video_token_id).nonzero().squeeze(1)
        frames = int(samples[i].scene["frames"])
        tokens = (cols.numel() - 1) // frames  # the video ends with one newline token
        # each frame's last token, then the newline after the video (the whole clip's state)
        per.append(torch.cat([cols[:frames * tokens].reshape(frames, tokens)[:, -1], cols[-1:]]))
    index = torch.stack(per)  # (N, T + 1)
    picked = hidden[torch.tensor(rows)[:, None], index]
    states = [frame_states(samples[i].scene) for i in rows]
    labels = {name: torch.stack([torch.cat([st[name], st[name][-1:]]) for st in states])
              for name in STATE_HEADS}
    return picked, labels


def _aux_labels(samples: list[syn.Sample], patch: int,
                labels: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels in the order the tower sees the batch's frames: image crops (base + tile, the
    same 112 px picture) first, then every video's frames. ``labels``: each sample's
    :func:`patch_labels`, when the caller has them already."""
    labels = labels or [patch_labels(s.scene, patch) for s in samples]
    objs, glyphs = [], []
    for want_image in (True, False):
        for s, (o, g) in zip(samples, labels, strict=True):
            if (s.qtype == "image_detail") != want_image:
                continue
            reps = 2 if want_image else 1
            objs.extend([o] * reps)
            glyphs.extend([g] * reps)
    return torch.cat(objs), torch.cat(glyphs)


def reveal_share(cfg: TrainConfig, step: int) -> float:
    """The share of background visual tokens visible to the LLM at ``step``."""
    start, end = cfg.reveal
    if step < start:
        return 0.0
    return min(1.0, (step - start) / max(1, end - start))


def _pooled(labels: torch.Tensor, grid: int) -> torch.Tensor:
    """(T, P) patch labels -> (T, P / 4) bool: a pooled 2x2 cell holds something."""
    t = labels.shape[0]
    x = (labels > 0).reshape(t, 1, grid, grid).float()
    pooled = torch.nn.functional.max_pool2d(x, 2, ceil_mode=True)
    return pooled.reshape(t, -1) > 0


def _visible(batch: Any, samples: list[syn.Sample], config: Any, share: float,
             gen: torch.Generator,
             labels: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
    """The attention mask with the hidden background visual tokens set to 0.

    Videos: 49 pooled tokens per frame, then the newline (kept). Images: the 196 base
    tokens, then the tile's 14 rows of 14 tokens and a newline each (newlines kept).
    A background token stays visible with probability ``share`` (drawn from ``gen``).
    ``labels``: each sample's :func:`patch_labels`, when the caller has them already.
    """
    mask = batch["attention_mask"].clone()
    if share >= 1.0:
        return mask
    patch = config.vision_config.patch_size
    grid = config.vision_config.image_size // patch
    labels = labels or [patch_labels(s.scene, patch) for s in samples]
    for row, (s, (obj, glyph)) in enumerate(zip(samples, labels, strict=True)):
        hit = (obj > 0) | (glyph > 0)  # (T, P)
        if s.qtype == "image_detail":
            tile = torch.cat([hit[0].reshape(grid, grid), torch.ones(grid, 1, dtype=torch.bool)],
                             1)
            relevant = torch.cat([hit[0], tile.reshape(-1)])
            token = config.image_token_id
        else:
            relevant = torch.cat([_pooled(hit.long(), grid).reshape(-1),
                                  torch.ones(1, dtype=torch.bool)])
            token = config.video_token_id
        cols = (batch["input_ids"][row] == token).nonzero().squeeze(1)
        if cols.numel() != relevant.numel():
            raise RuntimeError(f"{cols.numel()} visual tokens in the prompt, "
                               f"{relevant.numel()} relevance flags")
        keep = relevant | (torch.rand(relevant.shape, generator=gen) < share)
        mask[row, cols] = keep.to(mask.dtype)
    return mask


def _lr_at(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    start = cfg.decay_from * cfg.steps
    if step < start:
        return cfg.lr
    frac = (step - start) / max(1.0, cfg.steps - start)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def phase_of(cfg: TrainConfig, step: int) -> tuple[int, int]:
    """(phase number, frames) of a step under the curriculum."""
    for p, (until, frames) in enumerate(cfg.curriculum):
        if step < until:
            return p, frames
    return len(cfg.curriculum), cfg.frames


def _batch(processor: Any, cfg: TrainConfig, step: int) -> tuple[Any, list[syn.Sample]]:
    phase, frames = phase_of(cfg, step)
    qtypes = [q for q in cfg.qtypes if syn.MIN_FRAMES[q] <= frames]
    k = len(qtypes)
    start = phase * 10**7 + step * cfg.batch_size  # a stream of its own per phase
    samples = [
        syn.sample("train", i // k, qtypes[i % k], seed=cfg.data_seed, frames=frames,
                   size=cfg.size)
        for i in range(start, start + cfg.batch_size)
    ]
    return prompts(processor, samples), samples


def _targets(processor: Any, samples: list[syn.Sample], device: Any = None) -> torch.Tensor:
    tok = processor.tokenizer
    return torch.tensor([tok.convert_tokens_to_ids(s.answer) for s in samples], device=device)


@torch.no_grad()
def evaluate_split(model: Any, processor: Any, samples: list[syn.Sample],
                   batch_size: int = 24, build: Callable[[Any, list[syn.Sample]], Any] = prompts,
                   ) -> dict[str, Any]:
    """Accuracy of the argmax answer at the prompt's last position, overall and per type.
    ``build(processor, samples)`` makes a batch (default: the reference's :func:`prompts`);
    it is moved to the model's device."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    hits: dict[str, list[int]] = {}
    for i in range(0, len(samples), batch_size):
        chunk = samples[i:i + batch_size]
        batch = build(processor, chunk).to(device)
        pred = model(**batch, logits_to_keep=1).logits[:, -1].argmax(-1)
        for s, p, t in zip(chunk, pred.tolist(), _targets(processor, chunk).tolist(), strict=True):
            hits.setdefault(s.qtype, []).append(int(p == t))
    model.train(was_training)
    per = {q: sum(h) / len(h) for q, h in hits.items()}
    total = sum(sum(h) for h in hits.values()) / sum(len(h) for h in hits.values())
    return {"accuracy": total, "per_type": per}


def recipe(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """A run's arguments without the time limit: a run stopped by it may go on without it."""
    return None if config is None else {k: v for k, v in config.items() if k != "max_minutes"}


def _save_checkpoint(path: Path, model: Any, aux: Any, opt: Any, step: int,
                     log: list[dict], config: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "aux": aux.state_dict(), "optim": opt.state_dict(),
                "step": step, "log": log, "config": config}, tmp)
    os.replace(tmp, path)


def check_config(cfg: TrainConfig) -> None:
    """ValueError naming the first argument of ``cfg`` that cannot train."""
    for name in ("steps", "batch_size", "warmup", "checkpoint_every", "log_every", "val_every",
                 "val_samples"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if (not cfg.lr > 0 or not 0 <= cfg.decay_from <= 1 or cfg.aux_weight < 0
            or cfg.state_weight < 0 or cfg.token_weight < 0):
        raise ValueError("lr must be > 0, decay_from in [0, 1], aux_weight, state_weight and "
                         "token_weight >= 0")
    if cfg.max_minutes is not None and not cfg.max_minutes > 0:
        raise ValueError(f"max_minutes must be > 0, got {cfg.max_minutes}")
    if not 0 <= cfg.reveal[0] <= cfg.reveal[1]:
        raise ValueError(f"reveal must be (from_step, to_step) with 0 <= from <= to, got "
                         f"{cfg.reveal}")
    last = 0
    for until, frames in cfg.curriculum:
        if until <= last or not 1 <= frames <= cfg.frames:
            raise ValueError(
                f"curriculum phases must be (until_step, frames) with increasing steps and "
                f"1 <= frames <= {cfg.frames}, got {cfg.curriculum}"
            )
        last = until
    for q in cfg.qtypes:
        if q not in syn.QTYPES:
            raise ValueError(f"unknown qtype {q!r}; expected one of {', '.join(syn.QTYPES)}")


def train(out: str | Path, cfg: TrainConfig, *, progress: bool = True,
          echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train (or resume) the reference model into ``out``; returns the final validation."""
    from tqdm import tqdm

    check_config(cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    echo = echo or (lambda m: print(m, file=sys.stderr))
    model, processor = build_reference(cfg.seed)
    model.train()
    with torch.random.fork_rng(devices=[]):  # seeded, and the global RNG left alone
        torch.manual_seed(cfg.seed + 1)
        aux = torch.nn.ModuleDict({
            "tower": AuxHeads(model.config.vision_config.hidden_size,
                              model.config.vision_config.image_size
                              // model.config.vision_config.patch_size),
            "state": StateHeads(model.config.text_config.hidden_size),
            "token": TokenHeads(model.config.text_config.hidden_size),
        })
    patch = model.config.vision_config.patch_size
    params = [*model.named_parameters(), *(("aux." + n, p) for n, p in aux.named_parameters())]
    decay = [p for n, p in params if p.ndim >= 2]
    rest = [p for n, p in params if p.ndim < 2]
    captured: list[torch.Tensor] = []
    model.model.multi_modal_projector.register_forward_pre_hook(
        lambda mod, args: captured.append(args[0]))
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0}],
        lr=cfg.lr, betas=(0.9, 0.98),
    )
    ckpt_path = out / "checkpoint.pt"
    step, log = 0, []
    if ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if recipe(state.get("config")) != recipe(asdict(cfg)):
            raise ValueError(
                f"{ckpt_path} was written by a run with other arguments ({state.get('config')}); "
                "resume with the same arguments or train into another folder"
            )
        model.load_state_dict(state["model"])
        aux.load_state_dict(state["aux"])
        opt.load_state_dict(state["optim"])
        step, log = int(state["step"]), list(state["log"])
        echo(f"resuming from {ckpt_path} at step {step}")
    (out / "train_args.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    val = syn.dataset("val", cfg.val_samples, seed=cfg.data_seed, frames=cfg.frames,
                      size=cfg.size, qtypes=cfg.qtypes)
    # wall time of the earlier runs of this folder (validation included)
    elapsed = max((r.get("elapsed", 0.0) for r in log), default=0.0)
    t_start = time.monotonic()
    deadline = None if cfg.max_minutes is None else t_start + 60 * cfg.max_minutes - elapsed
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, desc="train-reference",
               unit="step", file=sys.stderr)
    window: list[tuple[float, int, int, float, float]] = []
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
            share = reveal_share(cfg, step)
            labels = ([patch_labels(s.scene, patch) for s in samples]
                      if share < 1.0 or cfg.aux_weight or cfg.token_weight
                      else None)  # once per step
            if share < 1.0:
                gen = torch.Generator().manual_seed(cfg.data_seed * 1_000_003 + step)
                batch["attention_mask"] = _visible(batch, samples, model.config, share, gen,
                                                   labels)
            captured.clear()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                output = model(**batch, logits_to_keep=1,
                               output_hidden_states=bool(cfg.state_weight
                                                         or cfg.token_weight))
            logits = output.logits[:, -1].float()
            answer_loss = torch.nn.functional.cross_entropy(logits, target)
            loss = answer_loss
            aux_loss = torch.zeros(())
            if cfg.aux_weight:
                obj, glyph = _aux_labels(samples, patch, labels)
                feats = torch.cat(captured).float()
                aux_loss = aux["tower"].loss(feats, obj, glyph)
                loss = loss + cfg.aux_weight * aux_loss
            if cfg.state_weight:
                picked = (_every_token if cfg.state_every_token else _frame_ends)(
                    batch, samples, model.config, output.hidden_states[-1].float())
                if picked is not None:
                    state_loss = aux["state"].loss(*picked)
                    aux_loss = aux_loss + state_loss
                    loss = loss + cfg.state_weight * state_loss
            if cfg.token_weight:
                picked = _video_tokens(batch, samples, model.config,
                                       output.hidden_states[-1].float(), labels)
                if picked is not None:
                    token_loss = aux["token"].loss(*picked)
                    aux_loss = aux_loss + token_loss
                    loss = loss + cfg.token_weight * token_loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            hit = int((logits.argmax(-1) == target).sum())
            window.append(
                (float(answer_loss.detach()), hit, len(samples), float(aux_loss.detach()),
                 time.monotonic() - t0)
            )
            if step % cfg.log_every == 0 or step == cfg.steps:
                n = sum(w[2] for w in window)
                rec = {"step": step, "loss": sum(w[0] for w in window) / len(window),
                       "train_accuracy": sum(w[1] for w in window) / n,
                       "aux_loss": sum(w[3] for w in window) / len(window),
                       "lr": _lr_at(cfg, step - 1), "seconds": sum(w[4] for w in window),
                       "elapsed": elapsed + time.monotonic() - t_start}
                log.append(rec)
                if not progress:
                    echo(json.dumps({k: round(v, 4) for k, v in rec.items()}))
                bar.set_postfix(loss=f"{rec['loss']:.3f}", acc=f"{rec['train_accuracy']:.2f}")
                window = []
            bar.update(1)
            if step % cfg.val_every == 0:
                v = evaluate_split(model, processor, val)
                log.append({"step": step, "val": v,
                            "elapsed": elapsed + time.monotonic() - t_start})
                echo(f"step {step}: val accuracy {v['accuracy']:.3f} "
                     + " ".join(f"{q}={a:.2f}" for q, a in sorted(v["per_type"].items())))
            if step % cfg.checkpoint_every == 0:
                _save_checkpoint(ckpt_path, model, aux, opt, step, log, asdict(cfg))
    except KeyboardInterrupt:
        _save_checkpoint(ckpt_path, model, aux, opt, step, log, asdict(cfg))
        echo(f"interrupted: checkpoint at step {step} in {ckpt_path}; run again to resume")
        raise
    finally:
        bar.close()
    _save_checkpoint(ckpt_path, model, aux, opt, step, log, asdict(cfg))
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
