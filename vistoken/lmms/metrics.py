"""What the lmms-eval wrappers measure on every ``generate``: tokens, FLOPs, seconds.

A :class:`Recorder` is attached to one model instance (nothing patched at class level): it
wraps that instance's ``generate`` and puts a forward pre-hook and a forward hook on it. Per
``generate`` call it keeps one :class:`Record` per prompt row:

- ``visual_before``: the row's visual placeholder positions in the prompt (LLaVA-OneVision
  counts a video's newline token, as ``vistoken eval`` does);
- ``visual_after``: the visual positions the language model really sees: the same less the
  compressed units' inputs plus their outputs for a method acting before the LLM
  (``handle.last``), ``budget_for(retention, before)`` for FastV (its layers >= K), the
  same as before without a compressor;
- ``text``: the row's other (non-padding) prompt tokens;
- ``prefill_tflops``: :func:`vistoken.flops.prefill_flops` of those counts (formula
  ``"fastv"``, one multiply-add = 1 FLOP; FastV's layered cost for ``"fastv"``);
- ``compress_seconds``: the compressor's host seconds (``handle.stats``; the device's when
  the handle's ``sync_timing`` is on, which the wrappers turn on for CUDA models);
- ``ttft``: seconds from the call of ``generate`` to the end of its first forward (the
  prefill: the vision tower, the compressor and the LLM's prefill; the processor ran before);
- ``decode_seconds`` and ``decode_steps``: the forwards after the first one; ``tpot`` (time
  per output token) is their ratio, over every row of the run;
- ``output_tokens``: new tokens of the row.

On CUDA the hooks synchronise the device at the start of ``generate`` and after each forward,
so the times are device times (a cost of one synchronisation per token). A generate that
raises is recorded and re-raised; lmms-eval's HF wrappers catch generation errors and answer
"" (``errors`` counts them, and the wrappers turn them into a failure).

:func:`summarize` merges records (from every rank) into the figures the report holds.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Record", "Recorder", "summarize"]


@dataclass
class Record:
    """One prompt row of one ``generate`` call (plain values: records travel between ranks)."""

    visual_before: int
    visual_after: int
    text: int
    prefill_tflops: float
    compress_seconds: float
    ttft: float
    decode_seconds: float
    decode_steps: int
    output_tokens: int
    generate_seconds: float  # the whole generate call
    rows: int  # rows of its generate call (the times are the call's)


class Recorder:
    """Measure every ``generate`` of ``model``; ``handle`` is its vt.apply handle or None."""

    def __init__(self, model: Any, handle: Any = None, *, method: str | None = None,
                 retention: float | None = None, layer: int | None = None) -> None:
        import torch

        self.model = model
        self.handle = handle
        self.method = method
        self.retention = retention
        self.layer = layer
        self.records: list[Record] = []
        self.errors: list[str] = []
        self.paused = False  # True: generate runs unmeasured (lmms-eval's padding requests)
        self._torch = torch
        self._call: dict[str, Any] | None = None
        self._cuda = any(p.device.type == "cuda" for p in model.parameters())
        cfg = model.config
        ids = [getattr(cfg, k, None) for k in ("image_token_id", "video_token_id",
                                                  "image_token_index", "video_token_index")]
        self._visual_ids = sorted({int(i) for i in ids if i is not None})
        self._hooks = [
            model.register_forward_pre_hook(self._pre, with_kwargs=True),
            model.register_forward_hook(self._post),
        ]
        self._generate = model.generate  # the bound method of the class
        model.generate = self._timed_generate  # instance attribute: remove() deletes it

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        self.model.__dict__.pop("generate", None)

    # -- timing ----------------------------------------------------------------------------

    def _sync(self) -> None:
        if self._cuda:
            self._torch.cuda.synchronize()

    def _timed_generate(self, *args: Any, **kwargs: Any) -> Any:
        if self.paused:
            return self._generate(*args, **kwargs)
        self._sync()
        self._call = {"start": time.perf_counter(), "ends": [], "prompt": None}
        if self.handle is not None:
            self.handle.stats = {}
            self.handle.last = []
        try:
            out = self._generate(*args, **kwargs)
        except Exception as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
            self._call = None
            raise
        call, self._call = self._call, None
        if call is not None and call["prompt"] is not None:
            self._sync()
            self._finish(call, out, time.perf_counter() - call["start"])
        return out

    def _pre(self, module: Any, args: tuple, kwargs: dict[str, Any]) -> None:
        call = self._call
        if call is None or call["prompt"] is not None:
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            return
        mask = kwargs.get("attention_mask")
        valid = mask.bool() if mask is not None else self._torch.ones_like(ids, dtype=bool)
        visual = self._torch.isin(ids, self._torch.tensor(self._visual_ids, device=ids.device))
        call["prompt"] = {
            "length": int(ids.shape[1]),
            "visual": (visual & valid).sum(dim=1).tolist(),
            "text": (valid & ~visual).sum(dim=1).tolist(),
        }

    def _post(self, module: Any, args: tuple, output: Any) -> None:
        call = self._call
        if call is not None and call["prompt"] is not None:
            self._sync()
            call["ends"].append(time.perf_counter())

    # -- the records ------------------------------------------------------------------------

    def _after(self, before: list[int]) -> list[int]:
        """Visual positions the LLM sees per row."""
        from ..core import budget_for, get_method

        if self.handle is None:
            return list(before)
        if get_method(self.method).stage == "llm":
            return [budget_for(self.retention, n) if n else 0 for n in before]
        last = list(self.handle.last)
        if not last:  # nothing compressed (e.g. a text-only prompt)
            return list(before)
        out, k = [], 0
        for n in before:  # the units, in sequence order, fill the rows in turn
            inputs = outputs = 0
            while k < len(last) and inputs + last[k].sources.numel() <= n:
                inputs += last[k].sources.numel()
                outputs += last[k].num_tokens
                k += 1
            out.append(n - inputs + outputs)
        if k != len(last):
            raise RuntimeError(
                f"vistoken: {len(last)} compressed units do not fit the rows' visual tokens "
                f"{before}"
            )
        return out

    def _finish(self, call: dict[str, Any], out: Any, seconds: float) -> None:
        from ..flops import prefill_flops

        prompt = call["prompt"]
        ends = call["ends"]
        before = prompt["visual"]
        after = self._after(before)
        rows = len(before)
        seq = out.sequences if hasattr(out, "sequences") else out
        new = max(int(seq.shape[-1]) - prompt["length"], 0)
        ttft = (ends[0] - call["start"]) if ends else math.nan
        decode = (ends[-1] - ends[0]) if ends else 0.0
        stats = self.handle.stats if self.handle is not None else {}
        compress = float(stats.get("compress_seconds", 0.0))
        cfg = self.model.config
        for b, a, t in zip(before, after, prompt["text"], strict=True):
            if self.handle is not None and self.method == "fastv":
                flops = prefill_flops(cfg, b, t, self.retention, method="fastv", layer=self.layer)
            else:
                flops = prefill_flops(cfg, a, t)
            self.records.append(Record(
                visual_before=int(b), visual_after=int(a), text=int(t),
                prefill_tflops=flops / 1e12, compress_seconds=compress / rows, ttft=ttft,
                decode_seconds=decode, decode_steps=max(len(ends) - 1, 0),
                output_tokens=new, generate_seconds=seconds, rows=rows,
            ))

    def dump(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.records]


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else None


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The report's figures from every rank's records (plain dicts of :class:`Record`)."""
    n = len(records)
    if n == 0:
        return {"samples": 0}
    steps = sum(r["decode_steps"] / r["rows"] for r in records)
    decode = sum(r["decode_seconds"] / r["rows"] for r in records)
    before = sum(r["visual_before"] for r in records)
    after = sum(r["visual_after"] for r in records)
    return {
        "samples": n,
        "visual_tokens_before": before / n,
        "visual_tokens_after": after / n,
        "visual_retention": after / before if before else None,
        "text_tokens": sum(r["text"] for r in records) / n,
        "prefill_tflops": sum(r["prefill_tflops"] for r in records) / n,
        "compress_seconds": sum(r["compress_seconds"] for r in records) / n,
        "compress_seconds_total": sum(r["compress_seconds"] for r in records),
        "ttft_seconds": _mean([r["ttft"] for r in records]),
        "tpot_seconds": decode / steps if steps else None,
        "output_tokens": sum(r["output_tokens"] for r in records) / n,
        "flops_formula": "fastv (one multiply-add = 1 FLOP; vistoken.flops)",
    }
