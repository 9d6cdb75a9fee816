"""Measured prefill cost through vt.apply, full against compressed, side by side in one run.

Model: LlavaOnevisionForConditionalGeneration whose LLM has Qwen2-0.5B's shape (LLaVA-
OneVision-0.5B: 24 layers, width 896, MLP 4864, 14 heads, 2 KV heads; vocabulary cut to
8192), random weights built from the config. The vision tower is not run: the 32 frames
enter as precomputed features (``mm_encoder_outputs``, which the model accepts), so the
timed region is the adapter + compressor + LLM prefill, not the vision encoder.

Features: real video features, EfficientNet-Lite0 (the default encoder) on
bigbuckbunny.mp4, 32 frames x 14x14 tokens, mapped from 1280 to 896 channels by a fixed
seeded Gaussian projection, plus the model's newline token: 6,272 visual tokens; 50 text
tokens before the video and 50 after (100 text tokens).

For each setting: prefill seconds (one forward with the KV cache, logits of the last token
only; median of --repeats after a warm-up on a short prompt), the compressor's own seconds
(inside the prefill), and the peak resident memory during the prefill beyond what was
resident before it (sampled every millisecond by a thread; on CUDA, peak allocated).

    .venv/bin/python benchmarks/bench_prefill.py [--repeats 2] [--settings full,scc@0.25,...]
        [--layers 24] [--device cpu] [--record]

Settings are METHOD@RETENTION, or ``full``; ``scc-tau@R`` is SCC's tau mode at the tau that
``scc@R``'s exact-count search picks on these inputs (found by one untimed prefill): the
floor under the search's cost, measured in the same run.

--record appends the figures, with the machine and date, to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

import vistoken as vt

HERE = Path(__file__).resolve().parent
FRAMES, GRID, TEXT_BEFORE, TEXT_AFTER = 32, (14, 14), 50, 50
DEFAULT_SETTINGS = "full,scc@0.25,scc@0.1,scc-tau@0.1,uniform@0.1,fastv@0.1"


def build_model(layers: int, device: str):
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    config = LlavaOnevisionConfig(
        vision_config={
            "model_type": "siglip_vision_model",
            "image_size": 56,
            "patch_size": 2,  # 28x28 patches, pooled 2x2 by the model to 14x14
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
        },
        text_config={
            "model_type": "qwen2",
            "vocab_size": 8192,
            "hidden_size": 896,
            "intermediate_size": 4864,
            "num_hidden_layers": layers,
            "num_attention_heads": 14,
            "num_key_value_heads": 2,
            "max_position_embeddings": 32768,
        },
        image_token_id=8190,
        video_token_id=8191,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )
    config._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlavaOnevisionForConditionalGeneration(config)
    return model.eval().to(device)


def real_features(d: int, seed: int = 0) -> torch.Tensor:
    from vistoken.pipeline import encode
    from vistoken.video import bundled_video

    enc = encode(bundled_video(), FRAMES)
    assert enc.grid == GRID
    x = enc.tokens
    g = torch.Generator().manual_seed(seed)
    proj = torch.randn(x.shape[-1], d, generator=g) / d**0.5
    return x @ proj  # (32, 196, d)


def make_inputs(model, feats: torch.Tensor, device: str) -> dict:
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    cfg = model.config
    g = torch.Generator().manual_seed(1)
    newline = model.model.image_newline.detach()[None]
    video = torch.cat((feats.reshape(-1, feats.shape[-1]), newline), dim=0)[None]
    ids = torch.cat(
        (
            torch.randint(1, 8000, (TEXT_BEFORE,), generator=g),
            torch.full((video.shape[1],), cfg.video_token_id),
            torch.randint(1, 8000, (TEXT_AFTER,), generator=g),
        )
    )[None]
    return {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones_like(ids).to(device),
        "mm_encoder_outputs": {"video": BaseModelOutputWithPooling(pooler_output=video.to(device))},
    }


def rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakMemory:
    """Peak memory during a block beyond what was in use before it (MiB)."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.peak = 0.0

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated() / 2**20
            return self
        self.base = rss_mib()
        self._top = self.base
        self._done = threading.Event()

        def sample() -> None:
            while not self._done.is_set():
                self._top = max(self._top, rss_mib())
                time.sleep(0.001)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() / 2**20 - self.base
            return
        self._done.set()
        self._thread.join()
        self.peak = max(self._top, rss_mib()) - self.base


def prefill(model, inputs: dict) -> None:
    with torch.inference_mode():
        model(**inputs, use_cache=True, logits_to_keep=1)


def run_setting(model, inputs: dict, setting: str, repeats: int, device: str) -> dict:
    method, _, ratio = setting.partition("@")
    handle = None
    if method == "scc-tau":  # SCC's tau mode at the tau the retention search picks there
        probe = vt.apply(model, "scc", retention=float(ratio))
        try:
            prefill(model, inputs)
            tau = probe.last[0].info["tau"]
        finally:
            probe.remove()
        handle = vt.apply(model, "scc", tau=tau)
        handle.sync_timing = True
    elif method != "full":
        handle = vt.apply(model, method, retention=float(ratio))
        handle.sync_timing = True  # compress_seconds: the compressor's device time
    try:
        short = {k: v for k, v in inputs.items() if k != "mm_encoder_outputs"}
        short["input_ids"] = short["input_ids"][:, :8]
        short["attention_mask"] = short["attention_mask"][:, :8]
        prefill(model, short)  # warm-up (kernels, allocator) on a text-only prompt
        times, comp, peaks = [], [], []
        for _ in range(repeats):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            with PeakMemory(device) as mem:
                t0 = time.perf_counter()
                prefill(model, inputs)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            peaks.append(mem.peak)
            if handle is not None:
                comp.append(handle.stats.get("compress_seconds", 0.0))
        stats = dict(handle.stats) if handle is not None else {}
    finally:
        if handle is not None:
            handle.remove()
    llm_tokens = stats.get("sequence_after", inputs["input_ids"].shape[1])
    if method == "fastv":
        llm_tokens = f"{inputs['input_ids'].shape[1]}->{stats['kept_tokens'] + 101}"
    return {
        "setting": setting,
        "seconds": statistics.median(times),
        "compress": statistics.median(comp) if comp else 0.0,
        "peak_mib": statistics.median(peaks),
        "llm_tokens": llm_tokens,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--settings", default=DEFAULT_SETTINGS)
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--record", action="store_true", help="append to benchmarks/RESULTS.md")
    args = ap.parse_args()

    model = build_model(args.layers, args.device)
    params = sum(p.numel() for p in model.model.language_model.parameters()) / 1e6
    feats = real_features(model.config.text_config.hidden_size)
    inputs = make_inputs(model, feats, args.device)
    print(
        f"LLM: {params:.0f}M parameters, {args.layers} layers; sequence "
        f"{inputs['input_ids'].shape[1]} tokens (6272 visual + newline + 100 text)"
    )
    rows = []
    for setting in args.settings.split(","):
        row = run_setting(model, inputs, setting, args.repeats, args.device)
        rows.append(row)
        print(
            f"{row['setting']:>12}: prefill {row['seconds']:.2f} s, compressor "
            f"{row['compress']:.3f} s, peak {row['peak_mib']:.0f} MiB, "
            f"LLM tokens {row['llm_tokens']}",
            flush=True,
        )
    table = format_table(rows)
    print()
    print(table)
    if args.record:
        record(table, params, args)


def format_table(rows: list[dict]) -> str:
    full = next((r for r in rows if r["setting"] == "full"), rows[0])
    lines = [
        "| setting | LLM tokens | prefill s | speedup | compressor s | compressor / prefill "
        "| peak MiB | memory ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['setting']} | {r['llm_tokens']} | {r['seconds']:.2f} | "
            f"{full['seconds'] / r['seconds']:.2f}x | {r['compress']:.3f} | "
            f"{100 * r['compress'] / r['seconds']:.1f}% | {r['peak_mib']:.0f} | "
            f"{r['peak_mib'] / max(full['peak_mib'], 1e-9):.2f} |"
        )
    return "\n".join(lines)


def record(table: str, params: float, args: argparse.Namespace) -> None:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    if args.device.startswith("cuda"):
        machine = torch.cuda.get_device_name() + f", torch {torch.__version__}"
    text = (
        f"\n## Prefill through vt.apply ({when})\n\n"
        f"`.venv/bin/python benchmarks/bench_prefill.py --repeats {args.repeats} "
        f"--layers {args.layers} --device {args.device} --record` on {machine}. "
        f"LLaVA-OneVision with a random-weight Qwen2-0.5B-shaped LLM ({params:.0f}M "
        "parameters), 32 real bigbuckbunny frames as precomputed features (vision tower not "
        "timed), 6,272 visual + 100 text tokens; medians.\n\n" + table + "\n"
    )
    with open(HERE / "RESULTS.md", "a") as fh:
        fh.write(text)


if __name__ == "__main__":
    main()
