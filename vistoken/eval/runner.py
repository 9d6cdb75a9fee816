"""Answer benchmark samples with the reference model under many compression settings.

:func:`evaluate` asks the model every sample once uncompressed (the **full** model) and once
per setting ``(method, retention)`` through ``vt.apply``, and summarises each setting as a row
(:func:`summarize`): accuracy with a 95% Wilson interval, the share of answers equal to the
full model's (**loyalty**), the mean visual tokens the LLM sees and the mean analytic prefill
TFLOPs per sample, per-question-type accuracy, and the seconds spent.

How the work is laid out (:func:`plan_batches`, :func:`run_batches`):

* Samples are cut into fixed batches of ``batch_size``, videos first, then the still images
  (``image_detail``), each batch of one kind, so no prompt is padded to another kind's length
  (the shortened sequences of ``vt.apply`` keep a row's left padding). The plan depends only on
  the samples and ``batch_size``: a batch is computed the same way whichever process runs it
  (:mod:`vistoken.eval.distributed` deals out whole batches).
* Per batch the processor runs once and the vision tower runs once (``get_video_features`` /
  ``get_image_features``); every setting then calls ``model.generate(input_ids,
  attention_mask, mm_encoder_outputs=..., max_new_tokens=1, do_sample=False)`` on those
  features. The LLaVA-OneVision adapter reads ``mm_encoder_outputs`` in place of the pixels,
  so a method sees exactly the features it would compute itself. VisionZip needs the tower's
  attention: its handle's probe (``AttentionProbe``, a forward hook on the attention module of
  the tower layer it reads) records statistics whenever that module runs. The batch's tower
  run keeps what that module was fed; under each VisionZip handle the module is called once
  more on it (:meth:`_Batch.replay_probe_input`), so the probe records the statistics of a
  full tower run at the cost of one attention layer.
* The answer is the one generated token, greedy.

Decisions (also recorded in every row):

* **Retention 1.0 is the uncompressed model.** By the library's contract ``retention=1.0``
  keeps every visual token unchanged and in order, so a ``(method, 1.0)`` row reuses the full
  model's answers (``"computed": "full"``) instead of running the method. Through ``vt.apply``
  the same prompts give logits equal to within float rounding (about 2e-7 on this model: the
  shortened prefill numbers padded rows' positions contiguously), which could flip a
  near-tie; reusing the full answers makes every method identical at 1.0 by construction.
  ``full_at_one=False`` runs them through ``vt.apply`` instead (the tests compare the two).
* **Images a method cannot compress are answered uncompressed.** On LLaVA-OneVision a still
  image is one unit of base + high-resolution tokens without a frame grid (392 tokens on the
  reference model), and VisionZip's statistics exist only for video frames. So for a method
  of stage ``"vision"`` (VisionZip), or one that needs a grid (``pool``) when the image units
  have none, the image samples get the full model's answers and token counts; the row lists
  those question types under ``"uncompressed_types"`` (the printed table marks the row), so
  its overall accuracy is not silently comparable with the others'.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .synthetic import QTYPES, Sample

__all__ = [
    "FULL",
    "Setting",
    "check_settings",
    "evaluate",
    "plan_batches",
    "run_batches",
    "summarize",
    "wilson",
]

log = logging.getLogger(__name__)

#: The method name of the uncompressed model's row.
FULL = "full"

#: z of a two-sided 95% normal interval.
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Setting:
    """One compression setting: a registered method at a retention in (0, 1]."""

    method: str
    retention: float

    @property
    def label(self) -> str:
        return f"{self.method}@{self.retention:g}"


def check_settings(settings: Iterable[Setting | tuple[str, float]]) -> list[Setting]:
    """``settings`` as :class:`Setting` s, each method registered and each retention valid.

    Raises ValueError for an unknown method (naming the known ones), a retention outside
    (0, 1] and a setting given twice.
    """
    from ..core import check_retention, get_method

    out = []
    for s in settings:
        method, retention = (s.method, s.retention) if isinstance(s, Setting) else s
        get_method(method)
        out.append(Setting(method, check_retention(retention)))
    seen = set()
    for s in out:
        if s in seen:
            raise ValueError(f"setting {s.label} is given twice")
        seen.add(s)
    return out


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``correct / n`` (95% for the default z).

    ``(center - half, center + half)`` with ``center = (p + z^2 / 2n) / (1 + z^2 / n)`` and
    ``half = z * sqrt(p (1 - p) / n + z^2 / 4n^2) / (1 + z^2 / n)``: unlike the normal
    interval it stays inside [0, 1] and is not empty at p = 0 or 1. ``(0, 1)`` for n = 0.
    """
    if n <= 0:
        return 0.0, 1.0
    p = correct / n
    den = 1 + z * z / n
    center = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    # the exact bounds at 0 and n (the formula gives them up to rounding)
    lo = 0.0 if correct == 0 else max(0.0, center - half)
    hi = 1.0 if correct == n else min(1.0, center + half)
    return lo, hi


def _is_image(s: Sample) -> bool:
    return s.qtype == "image_detail"


def plan_batches(samples: Sequence[Sample], batch_size: int) -> list[list[int]]:
    """Fixed batches of sample indices: the videos in order, then the still images, cut into
    runs of at most ``batch_size``; a batch never mixes the two kinds."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    plan: list[list[int]] = []
    for want in (False, True):
        idx = [i for i, s in enumerate(samples) if _is_image(s) == want]
        plan += [idx[k : k + batch_size] for k in range(0, len(idx), batch_size)]
    return plan


# --------------------------------------------------------------------------------------------
# one batch


class _Batch:
    """A prepared batch: the processor's tensors, its features, its token counts."""

    def __init__(self, model: Any, processor: Any, samples: Sequence[Sample], device: Any):
        import torch

        from .reference import prompts

        self.model = model
        self.inner = model.model
        self.image = _is_image(samples[0])
        with warnings.catch_warnings():
            # the processor turns the samples' read-only frames into tensors (it copies them)
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            self.inputs = prompts(processor, samples).to(device)
        ids = self.inputs["input_ids"]
        cfg = model.config
        visual_ids = torch.tensor([cfg.image_token_id, cfg.video_token_id], device=ids.device)
        visual = torch.isin(ids, visual_ids)
        self.placeholders = visual.sum(dim=1).tolist()  # visual positions per row
        self.text = (self.inputs["attention_mask"].bool() & ~visual).sum(dim=1).tolist()
        self.prompt_len = int(ids.shape[1])
        self.mm: dict[str, Any] | None = None

    def tower(self, probe_layer: int | None = None) -> dict[str, Any]:
        """Run the vision tower on the batch's pixels (once); the features by kind.

        probe_layer: also keep what the tower's encoder layer ``probe_layer`` fed its
        attention module (:meth:`replay_probe_input` hands it to a VisionZip probe).
        """
        x = self.inputs
        if self.image:
            out = self.inner.get_image_features(
                x["pixel_values"],
                x["image_sizes"],
                batch_num_images=x.get("batch_num_images"),
                return_dict=True,
            )
            self.mm = {"image": out}
            return self.mm
        hook = None
        if probe_layer is not None:
            from ..models import _hf
            from ..models.attention import _encoder_layers

            attn = _encoder_layers(self.inner.vision_tower)[probe_layer].self_attn
            self.probe_inputs: list[tuple[Any, Any, Any]] = []

            def keep(module: Any, args: tuple, kwargs: dict[str, Any]) -> None:
                hidden, mask = _hf.attention_inputs(args, kwargs)
                self.probe_inputs.append((module, hidden, mask))  # one per tower call

            hook = attn.register_forward_pre_hook(keep, with_kwargs=True)
        try:
            video = self.inner.get_video_features(x["pixel_values_videos"], return_dict=True)
        finally:
            if hook is not None:
                hook.remove()
        self.mm = {"video": video}
        return self.mm

    def replay_probe_input(self) -> None:
        """Call the probed attention module again on the input it had in :meth:`tower`.

        A VisionZip handle's probe is a forward hook on that module (AttentionProbe): it
        records the statistics of this batch's frames exactly as a full tower run would,
        without running the tower again.
        """
        for module, hidden, mask in self.probe_inputs:
            module(hidden_states=hidden, attention_mask=mask)

    def generate(self, processor: Any, *, pixels: bool = False) -> list[str]:
        """The one greedy answer token of every row, from the cached features (or pixels)."""
        from .reference import decode_answers

        x = self.inputs
        if pixels:
            kwargs = dict(x)
        else:
            assert self.mm is not None
            kwargs = {
                "input_ids": x["input_ids"],
                "attention_mask": x["attention_mask"],
                "mm_encoder_outputs": dict(self.mm),  # a fresh dict: the model may fill it
            }
        out = self.model.generate(
            **kwargs,
            max_new_tokens=1,
            do_sample=False,
            pad_token_id=processor.tokenizer.pad_token_id,
        )
        return decode_answers(processor, out[:, self.prompt_len :])

    def unit_grids_ok(self) -> bool:
        """Whether every compressible unit of the batch lies on a frame grid (images may not)."""
        from ..models.families import family_of

        fam = family_of(self.model)
        ids = self.inputs["input_ids"]
        embeds = self.inner.get_input_embeddings()(ids)
        units = fam.units(self.inner, {"mm_encoder_outputs": dict(self.mm or {})}, ids, embeds)
        return all(u.grid is not None for u in units)


def _flops(config: Any, visual: int, text: int, method: str | None, retention: float) -> float:
    from ..flops import prefill_flops

    if method == "fastv":
        return prefill_flops(config, visual, text, retention, method="fastv") / 1e12
    return prefill_flops(config, visual, text) / 1e12


def _out(answers: list[str], visual: list[int], tflops: list[float], seconds: float,
         computed: str) -> dict[str, Any]:
    return {"answers": answers, "visual": visual, "tflops": tflops, "seconds": seconds,
            "computed": computed}


def _run_batch(
    model: Any,
    processor: Any,
    samples: Sequence[Sample],
    settings: Sequence[Setting],
    device: Any,
    full_at_one: bool,
) -> dict[str, Any]:
    """Every setting's answers, kept visual tokens and TFLOPs per row of one batch."""
    import torch

    import vistoken as vt

    from ..core import budget_for, get_method

    t0 = time.perf_counter()
    b = _Batch(model, processor, samples, device)
    prepare_s = time.perf_counter() - t0
    cfg = model.config

    def via_apply(s: Setting) -> dict[str, Any]:
        stage = get_method(s.method).stage
        t = time.perf_counter()
        with vt.apply(model, s.method, retention=s.retention) as h:
            if stage == "vision":
                b.replay_probe_input()  # the tower's attention statistics for this handle
            answers = b.generate(processor)
            last = list(h.last)
            kept = h.stats.get("kept_tokens")
        seconds = time.perf_counter() - t
        if stage == "llm":  # FastV: budget_for(retention, n) of each row's n visual tokens
            visual = [budget_for(s.retention, n) if n else 0 for n in b.placeholders]
            if kept is not None and kept != sum(visual):
                raise RuntimeError(f"{s.label}: kept {kept} visual tokens, expected {visual}")
            tflops = [_flops(cfg, n, t_, "fastv", s.retention)
                      for n, t_ in zip(b.placeholders, b.text, strict=True)]
        else:
            if len(last) != len(samples):
                raise RuntimeError(
                    f"{s.label}: expected one compressed unit per sample, got {len(last)}"
                )
            # the row's visual positions, less the unit's inputs, plus its outputs
            visual = [n - c.sources.numel() + c.num_tokens
                      for n, c in zip(b.placeholders, last, strict=True)]
            tflops = [_flops(cfg, v, t_, None, 1.0) for v, t_ in zip(visual, b.text, strict=True)]
        return _out(answers, visual, tflops, seconds, "vt.apply")

    outs: dict[int, dict[str, Any]] = {}
    run = [k for k, s in enumerate(settings) if not (s.retention == 1.0 and full_at_one)]
    vision = [settings[k] for k in run if get_method(settings[k].method).stage == "vision"]
    probe_layer = None
    if vision and not b.image:
        layers = {int(get_method(s.method).defaults()["layer"]) for s in vision}
        if len(layers) != 1:
            raise ValueError(f"vision-stage methods reading different layers: {sorted(layers)}")
        probe_layer = layers.pop()
    with torch.inference_mode():
        t = time.perf_counter()
        b.tower(probe_layer)
        tower_s = time.perf_counter() - t
        t = time.perf_counter()
        answers = b.generate(processor)
        full_tflops = [_flops(cfg, v, t_, None, 1.0)
                       for v, t_ in zip(b.placeholders, b.text, strict=True)]
        full = _out(answers, list(b.placeholders), full_tflops, time.perf_counter() - t, "full")
        grids_ok: bool | None = None
        for k in run:
            spec = get_method(settings[k].method)
            if b.image and spec.stage == "vision":
                outs[k] = {**full, "seconds": 0.0, "computed": "uncompressed"}
                continue
            if b.image and spec.needs_grid:
                if grids_ok is None:
                    grids_ok = b.unit_grids_ok()
                if not grids_ok:
                    outs[k] = {**full, "seconds": 0.0, "computed": "uncompressed"}
                    continue
            outs[k] = via_apply(settings[k])
    reuse = {**full, "seconds": 0.0, "computed": "full"}
    return {
        "full": full,
        "settings": [outs.get(k, reuse) for k in range(len(settings))],
        "prepare_seconds": prepare_s,
        "tower_seconds": tower_s,
    }


def run_batches(
    model: Any,
    processor: Any,
    samples: Sequence[Sample],
    settings: Sequence[Setting | tuple[str, float]],
    plan: Sequence[Sequence[int]],
    batch_ids: Iterable[int] | None = None,
    *,
    device: Any = None,
    full_at_one: bool = True,
    progress: bool = False,
) -> dict[int, dict[str, Any]]:
    """Run the batches ``batch_ids`` (default: all) of ``plan``; batch id -> its record.

    A record holds, for the full model and for every setting (in order), the answers, the
    visual tokens the LLM saw and the prefill TFLOPs of each row, the seconds of its
    prefills, and how it was computed; plus the batch's preparation and tower seconds. Plain
    Python values only, so records travel between processes.
    """
    settings = check_settings(settings)
    ids = list(range(len(plan)) if batch_ids is None else batch_ids)
    if device is None:
        device = next(model.parameters()).device
    records: dict[int, dict[str, Any]] = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(plan[i]) for i in ids), unit="sample", desc="eval")
    try:
        for i in ids:
            batch = [samples[j] for j in plan[i]]
            records[i] = _run_batch(model, processor, batch, settings, device, full_at_one)
            if bar is not None:
                bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    return records


# --------------------------------------------------------------------------------------------
# rows


def _row(
    method: str,
    retention: float,
    samples: Sequence[Sample],
    answers: list[str],
    full: list[str],
    visual: list[int],
    tflops: list[float],
    seconds: float,
    computed: set[str],
) -> dict[str, Any]:
    n = len(samples)
    right = [a == s.answer for a, s in zip(answers, samples, strict=True)]
    same = [a == f for a, f in zip(answers, full, strict=True)]
    per_type: dict[str, dict[str, Any]] = {}
    for q in QTYPES:
        idx = [i for i, s in enumerate(samples) if s.qtype == q]
        if idx:
            per_type[q] = {
                "accuracy": sum(right[i] for i in idx) / len(idx),
                "loyalty": sum(same[i] for i in idx) / len(idx),
                "samples": len(idx),
            }
    lo, hi = wilson(sum(right), n)
    return {
        "method": method,
        "retention": retention,
        "accuracy": sum(right) / n,
        "ci95": [lo, hi],
        "loyalty": sum(same) / n,
        "samples": n,
        "visual_tokens": sum(visual) / n,
        "prefill_tflops": sum(tflops) / n,
        "seconds": seconds,
        "per_type": per_type,
        "computed": next((c for c in ("vt.apply", "full") if c in computed), "uncompressed"),
        "uncompressed_types": [],
        "answers": answers,
    }


def summarize(
    samples: Sequence[Sample],
    settings: Sequence[Setting | tuple[str, float]],
    plan: Sequence[Sequence[int]],
    records: dict[int, dict[str, Any]],
) -> dict[str, Any]:
    """The full model's row, one row per setting and the timing, from every batch's record.

    Raises ValueError when a batch of ``plan`` has no record.
    """
    settings = check_settings(settings)
    missing = [i for i in range(len(plan)) if i not in records]
    if missing:
        raise ValueError(f"no record for batches {missing}")
    n = len(samples)

    def collect(get: Any) -> tuple[list, list, list, float, set[str], set[str]]:
        answers: list[Any] = [None] * n
        visual: list[Any] = [None] * n
        tflops: list[Any] = [None] * n
        seconds = 0.0
        computed: set[str] = set()
        uncompressed: set[str] = set()
        for i, idx in enumerate(plan):
            o = get(records[i])
            for j, a, v, f in zip(idx, o["answers"], o["visual"], o["tflops"], strict=True):
                answers[j], visual[j], tflops[j] = a, v, f
                if o["computed"] == "uncompressed":
                    uncompressed.add(samples[j].qtype)
            seconds += o["seconds"]
            computed.add(o["computed"])
        return answers, visual, tflops, seconds, computed, uncompressed

    fa, fv, ft, fs, _, _ = collect(lambda r: r["full"])
    full = _row(FULL, 1.0, samples, fa, fa, fv, ft, fs, {"vt.apply"})
    full["computed"] = "full"
    rows = []
    for k, s in enumerate(settings):
        a, v, t, sec, computed, unc = collect(lambda r, k=k: r["settings"][k])
        row = _row(s.method, s.retention, samples, a, fa, v, t, sec, computed)
        row["uncompressed_types"] = [q for q in QTYPES if q in unc]
        rows.append(row)
    timing = {
        "prepare": sum(r["prepare_seconds"] for r in records.values()),
        "vision_tower": sum(r["tower_seconds"] for r in records.values()),
    }
    return {"full": full, "rows": rows, "timing": timing}


def evaluate(
    model: Any,
    processor: Any,
    samples: Sequence[Sample],
    settings: Sequence[Setting | tuple[str, float]],
    *,
    batch_size: int = 16,
    device: Any = None,
    full_at_one: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate ``samples`` with the full model and every setting, in this process.

    Returns ``{"full": row, "rows": [row, ...], "timing": {...}}`` (see the module
    docstring and :func:`summarize`); ``timing["total"]`` is the wall time.
    """
    if not samples:
        raise ValueError("no samples to evaluate")
    settings = check_settings(settings)
    t0 = time.perf_counter()
    plan = plan_batches(samples, batch_size)
    records = run_batches(model, processor, samples, settings, plan, device=device,
                          full_at_one=full_at_one, progress=progress)
    out = summarize(samples, settings, plan, records)
    out["timing"]["total"] = time.perf_counter() - t0
    return out
