"""``docs/performance.md`` from the JSON files of one ``benchmarks.run_all``: targets, tables, machine.

.venv/bin/python -m benchmarks.report        # re-render from benchmarks/results/*.json
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from benchmarks.common import REPO, RESULTS

LITE_TARGET_MS = 8.0
ORT_SPEEDUP_TARGET = 1.5


def _load(folder: Path, name: str) -> dict | None:
    path = folder / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _fmt(v, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def _cell(model: dict | None, preset: str, batch: int, backend: str) -> dict | None:
    for r in (model or {}).get("results", []):
        if (r["preset"], r["batch"], r["backend"]) == (preset, batch, backend) and "skipped" not in r:
            return r
    return None


def _scenario(stream: dict | None, streams: int, fps: float) -> dict | None:
    for r in (stream or {}).get("scenarios", []):
        if r["streams"] == streams and r["fps"] == fps:
            return r
    return None


# -- sections ----------------------------------------------------------------------------------
def targets(model, stream, gpu_model, gpu_stream) -> list[str]:
    rows = []
    ort = _cell(model, "lite", 1, "onnxruntime-matmul")  # what the service exports a checkpoint to
    conv = _cell(model, "lite", 1, "onnxruntime-conv")
    for cell in (ort, conv):
        if cell:
            p50 = cell["per_frame_ms"]["p50"]
            rows.append(
                [
                    f"CPU: `lite` 112×112, ONNX Runtime ({cell['backend']}), batch 1, p50 ≤ 8 ms/frame",
                    f"{p50:.2f} ms",
                    _met(p50 <= LITE_TARGET_MS),
                ]
            )
    for cell in (ort, conv):
        if cell and cell.get("speedup_vs_torch"):
            s = cell["speedup_vs_torch"]
            rows.append(
                [
                    f"CPU: ONNX Runtime ({cell['backend']}) ≥ 1.5× torch eager (`lite`, batch 1, same run)",
                    f"{s:.2f}×",
                    _met(s >= ORT_SPEEDUP_TARGET),
                ]
            )
    one = _scenario(stream, 1, 50.0)
    if one:
        lat = one["client_latency_ms"]
        rows.append(
            [
                "CPU: 1 stream at 50 fps, p99 ≤ 32 ms, no frame lost",
                f"p99 {_fmt(lat['p99'])} ms, {one['frames_lost']} lost",
                "met" if one["within_budget"] else "**missed**",
            ]
        )
    four = _scenario(stream, 4, 25.0)
    if four:
        lat = four["client_latency_ms"]
        rows.append(
            [
                "CPU: ≥ 4 concurrent 25-fps streams within p99 ≤ 32 ms",
                f"4×25: p99 {_fmt(lat['p99'])} ms, {four['frames_lost']} lost",
                "met" if four["within_budget"] else "**missed**",
            ]
        )
    if stream and stream.get("capacity"):
        cap = stream["capacity"]
        rows.append(
            [
                "CPU: capacity (30-fps streams within p99 ≤ 32 ms, none lost)",
                f"{cap['streams_held']} stream(s)",
                "–",
            ]
        )
    if gpu_model:
        c1 = _cell(gpu_model, "paper", 1, "tensorrt-fp16") or _cell(gpu_model, "paper", 1, "torch-fp16-graph")
        c32 = _cell(gpu_model, "paper", 32, "tensorrt-fp16") or _cell(
            gpu_model, "paper", 32, "torch-fp16-graph"
        )
        if c1:
            v = c1["per_frame_ms"]["p50"]
            rows.append(
                ["GPU: `paper` fp16 batch 1 ≤ 2 ms/frame", f"{v:.2f} ms ({c1['backend']})", _met(v <= 2)]
            )
        if c32:
            v = c32["frames_per_s"]
            rows.append(
                ["GPU: ≥ 3,000 frames/s at batch 32", f"{v:,.0f} ({c32['backend']})", _met(v >= 3000)]
            )
        if gpu_stream and gpu_stream.get("capacity"):
            held = gpu_stream["capacity"]["streams_held"]
            rows.append(["GPU: ≥ 32 concurrent 50-fps streams", f"{held} streams (30 fps search)", "–"])
    else:
        rows.append(
            ["GPU targets (H100)", "not measured: no GPU in the session that produced this page", "–"]
        )
    return ["## Targets", "", *_table(["target", "measured", ""], rows)]


STAGE_NAMES = ("receive", "decode", "resize", "queue_wait", "inference", "resize_back", "encode", "send")


def findings(model, stream, rest, stages) -> list[str]:
    """A few sentences computed from the figures: what misses a target, why, and what would meet it."""
    out = []
    ort = _cell(model, "lite", 1, "onnxruntime-matmul")
    if ort:
        p50 = ort["per_frame_ms"]["p50"]
        out.append(
            f"- `lite` runs at {p50:.1f} ms/frame (ONNX Runtime, batch 1, p50) against the 8 ms target"
            + (" — met." if p50 <= LITE_TARGET_MS else f" — {p50 / LITE_TARGET_MS:.1f}× too slow.")
        )
    lv = (model or {}).get("lite_variants")
    if lv:
        best: dict[str, float] = {}
        for v in lv["variants"]:
            best[v["variant"]] = min(best.get(v["variant"], math.inf), v["per_frame_ms"]["p50"])
        fast = sorted(((n, ms) for n, ms in best.items() if ms <= LITE_TARGET_MS), key=lambda kv: -kv[1])
        if fast:
            text = "- Measured in the same run, the configurations under 8 ms are: " + "; ".join(
                f"{name} ({ms:.1f} ms, best thread count)" for name, ms in fast
            )
            out.append(text + ".")
    four = _scenario(stream, 4, 25.0)
    batched = _cell(model, "lite", 4, "onnxruntime-matmul")
    if ort and batched and four:
        b1, b4 = ort["per_frame_ms"]["p50"], batched["per_frame_ms"]["p50"]
        load = (stream or {}).get("machine", {}).get("load_average")
        out.append(
            f"- 4 streams × 25 fps need {100 * b1 / 1000:.2f} s of inference per second at batch 1 "
            f"({b1:.1f} ms/frame), {100 * b4 / 1000:.2f} s when the batcher forms batches of 4 "
            f"({b4:.1f} ms/frame): on a 2-core machine (load average {load} at the end of the streaming run) "
            "the event loop, the clients and the rest of the machine need the remainder, so the "
            + (
                "streams kept up."
                if four["within_budget"]
                else f"queue grows (4×25 client p99 {_fmt(four['client_latency_ms']['p99'])} ms, "
                f"{four['frames_lost']} frames lost to `overloaded`)."
            )
        )
    for block in (stages or {}).get("results", []):
        rows = {v["variant"]: v["stages_ms"] for v in block["variants"]}
        if "baseline" in rows and "optimised" in rows:
            base, opt = rows["baseline"], rows["optimised"]
            top = sorted(STAGE_NAMES, key=lambda n: -(base[n]["mean"] or 0))[:2]
            h, w = block["frame_size"]
            b, o = base["end_to_end"]["mean"], opt["end_to_end"]["mean"]
            out.append(
                f"- {h}×{w} frames: the largest stages of the baseline are "
                + " and ".join(f"{n} ({base[n]['mean']:.1f} ms)" for n in top)
                + f"; the optimised path takes {o:.1f} ms end to end against {b:.1f} ms ({b / o:.2f}×)."
            )
    for clip in (rest or {}).get("clips", []):
        t = clip["timings_ms"]
        share = t["inference"]["p50"] / t["client"]["p50"] if t["client"]["p50"] else 0
        out.append(f"- REST {clip['clip']}: inference is {share:.0%} of the request.")
    return ["## What the figures say", "", *out, ""] if out else []


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def model_section(model: dict | None, title: str) -> list[str]:
    if not model:
        return [f"## {title}", "", "Not run.", ""]
    rows = []
    for r in model["results"]:
        if "skipped" in r:
            rows.append([r["preset"], r["batch"], r["backend"], "–", "–", "–", "–", r["skipped"]])
            continue
        f, t = r["per_frame_ms"], r["timing"]
        note = f"{t['reps']} reps" + (" (time-capped)" if t["stopped_by"] == "budget_s" else "")
        rows.append(
            [
                r["preset"],
                r["batch"],
                r["backend"],
                f["p50"],
                f["p99"],
                r["frames_per_s"],
                f"{r['speedup_vs_torch']:.2f}×" if r.get("speedup_vs_torch") else "–",
                note,
            ]
        )
    out = [f"## {title}", "", f"`{model['command']}` — {model['threads']} intra-op threads, interleaved.", ""]
    out += _table(
        ["preset", "batch", "backend", "p50 ms/frame", "p99 ms/frame", "frames/s", "vs torch", "timing"], rows
    )
    if model.get("ort_options"):
        out += ["### ONNX Runtime session options (`lite`, batch 1, interleaved within each block)", ""]
        rows = []
        for i, block in enumerate(model["ort_options"]):
            for v in block["variants"]:
                s = v["per_frame_ms"]
                rows.append([i + 1, v["variant"], s["p50"], s["p99"], f"{v['speed_vs_service_default']}×"])
        out += _table(["block", "variant", "p50 ms", "p99 ms", "speed vs service default"], rows)
    if model.get("lite_variants"):
        lv = model["lite_variants"]
        out += [
            "### What would meet 8 ms: `lite` and lighter calibration (ONNX Runtime, conv form, batch 1)",
            "",
        ]
        rows = [
            [
                v["variant"],
                v["threads"],
                f"{v['parameters']:,}",
                v["per_frame_ms"]["p50"],
                v["per_frame_ms"]["min"],
                "yes" if v["per_frame_ms"]["p50"] <= LITE_TARGET_MS else "no",
            ]
            for v in lv["variants"]
        ]
        out += _table(["configuration", "threads", "parameters", "p50 ms", "min ms", "p50 ≤ 8 ms"], rows)
    return out


def stream_section(stream: dict | None, title: str) -> list[str]:
    if not stream:
        return [f"## {title}", "", "Not run.", ""]
    out = [
        f"## {title}",
        "",
        f"`{stream['command']}` — model {stream['model_source']}; {stream['client']}.",
        "",
    ]

    def row(r):
        c, s = r["client_latency_ms"], r["server_latency_ms"]
        return [
            f"{r['streams']}×{r['fps']:.0f}",
            r["seconds"],
            c["p50"],
            c["p95"],
            c["p99"],
            s.get("p50"),
            s.get("p95"),
            s.get("p99"),
            f"{r['frames_lost']}/{r['frames_sent']}",
            f"{r['budget_misses_client']} / {r['budget_misses_server']}",
            "yes" if r["within_budget"] else "no",
        ]

    header = [
        "streams×fps",
        "s",
        "client p50",
        "p95",
        "p99",
        "server p50",
        "p95",
        "p99",
        "lost",
        "misses c/s",
        "ok",
    ]
    out += _table(header, [row(r) for r in stream["scenarios"]])
    cap = stream.get("capacity")
    if cap:
        out += [
            f"Capacity: **{cap['streams_held']}** concurrent {cap['fps']:.0f}-fps streams held "
            f"({cap['criterion']}; "
            f"first failing: {_fmt(cap['first_failing'])}; search stopped by {cap['stopped_by']}).",
            "",
        ]
        out += _table(header, [row(r) for r in cap["trials"]])
    out += ["Latencies in ms; server figures come from the `/metrics` histogram (bucket-interpolated).", ""]
    return out


def rest_section(rest: dict | None) -> list[str]:
    if not rest:
        return ["## REST", "", "Not run.", ""]
    out = ["## REST (`POST /v1/segment`)", "", f"`{rest['command']}` — model {rest['model_source']}.", ""]
    stages = ("decode", "preprocess", "queue", "inference", "postprocess", "encode", "transport")
    rows = []
    for c in rest["clips"]:
        t = c["timings_ms"]
        rows.append(
            [c["clip"], c["frames"], t["client"]["p50"], c["frames_per_s"], c["ms_per_frame"]]
            + [t[s]["p50"] for s in stages]
        )
    out += _table(["clip", "frames", "total ms", "frames/s", "ms/frame", *stages], rows)
    return out


def stages_section(stages: dict | None) -> list[str]:
    if not stages:
        return ["## Where the time goes", "", "Not run.", ""]
    names = stages["stages"]
    out = [
        "## Where the time goes (one stream, per frame, mean ms)",
        "",
        f"`{stages['command']}` — one stream at {stages['fps']:.0f} fps visiting each variant's server for "
        f"{stages['burst_seconds']} s, {stages['rounds']} rounds (order reversed every other round), the "
        f"first {stages['warmup_frames']} frames of each visit dropped.",
        "",
    ]
    for block in stages["results"]:
        h, w = block["frame_size"]
        rows = []
        for v in block["variants"]:
            s = v["stages_ms"]
            speed = block["speedup_vs_baseline"].get(v["variant"], {}).get("end_to_end")
            rows.append(
                [v["variant"]]
                + [s[n]["mean"] for n in names]
                + [
                    s["other"]["mean"],
                    s["end_to_end"]["mean"],
                    s["end_to_end"]["p99"],
                    f"{speed}×" if speed else "–",
                ]
            )
        out += [f"### {h}×{w} frames", ""]
        out += _table(["variant", *names, "other", "end-to-end", "e2e p99", "speed vs baseline"], rows)
        out += _table(["variant", "what it changes"], [[v["variant"], v["note"]] for v in block["variants"]])
    return out


FAULT_CASES = {
    "growing": "H.264, frames grow from 64² to 4000² after the probe (refused)",
    "mp4": "long 1024² H.264 MP4",
    "dicom": "RLE DICOM cine loop, 1024²",
    "stream": "one 1024² gray8 stream, then `end`",
}


def faults_section(runs: list[dict]) -> list[str]:
    """Peak memory of the red-team inputs (benchmarks/faults.py), one table row per case and run."""
    runs = [r for r in runs if r]
    if not runs:
        return []
    out = [
        "## Memory under hostile inputs",
        "",
        "`benchmarks/faults.py`: one `echoseg serve` (bundled model, default settings) takes each "
        "input in turn; before each its peak RSS is reset (`/proc/pid/clear_refs`), so *peak above "
        "idle* is what that one request added at its worst, *after* what it left behind. Targets: "
        "≤ 600 MB above idle per upload, ≤ 100 MB per stream whatever its length. Before the "
        "chunked pipeline (commit 29b27e5) the red-team run measured 4.5 GB for the growing video "
        "(refused only after 7.9 s of decoding), 3.6 GB for 500×1024² H.264, 1.95 GB for the "
        "3.9 MB RLE DICOM and 5.1 GB at the `end` of a 1,500-frame 1024² stream; the fault suite's "
        "smaller variants on that commit grew by 528 MB (300×512² MP4) and 255 MB (400×512² stream).",
        "",
    ]
    rows = []
    for run in runs:
        for name, c in run["cases"].items():
            if name not in FAULT_CASES:
                continue
            what = c.get("clip") or c.get("stream") or ""
            outcome = c.get("code") or (f"{c.get('frames') or c.get('masks')} frames" if "status" not in c
                                        or c["status"] == 200 else c["status"])  # fmt: skip
            if name != "stream":
                outcome = f"{c['status']} {outcome}"
            rows.append(
                [FAULT_CASES[name], what, _fmt(c["body_bytes"] / 1e3, 1) if "body_bytes" in c else "–",
                 c["peak_above_idle_mb"], c["after_above_idle_mb"], c["seconds"], outcome]
            )  # fmt: skip
    out += _table(["input", "size", "body KB", "peak above idle MB", "after MB", "s", "answer"], rows)
    for run in runs:
        stream = run["cases"].get("stream")
        if stream and stream.get("rss_mb_by_frame"):
            samples = ", ".join(f"{i}: {r}" for i, r in stream["rss_mb_by_frame"])
            out += [f"Stream RSS (MB) by frame sent, {stream['stream']}: {samples}.", ""]
        drain = run["cases"].get("drain")
        if drain:
            out += [
                f"Drain: SIGTERM with a stream and a stalled upload in flight, drain timeout "
                f"{drain['drain_timeout_s']:g} s: the process exited {drain['exit_after_sigterm_s']} s after "
                f"the signal (exit code {drain['exit_code']}); the upload got {drain['upload_status']}, "
                f"the stream close {drain['stream_close_code']} after {drain['stream_masks_before_close']} "
                "masks.",
                "",
            ]
    return out


def soak_section(soak: dict | None) -> list[str]:
    if not soak:
        return []
    if "phases" not in soak:  # one phase (results written before the quiet/hostile comparison)
        soak = {**soak, "phases": {"hostile": {**soak, "hostile_actions": soak["hostile"]}}}
    minutes = soak.get("minutes_per_phase", soak.get("minutes"))
    out = [
        f"## Soak: streams, REST and a hostile mix together ({soak['streams']}×{soak['fps']:g} fps)",
        "",
        f"`{soak['command']}`: {soak['streams']} streams of {soak['size'][0]}×{soak['size'][1]} "
        f"at {soak['fps']:g} fps (reconnecting every 250 frames) and a 32-frame REST upload every 2 s, "
        f"{' then '.join(soak['phases'])} for {minutes:g} min each (hostile: one hostile action a "
        f"second). Load average at the end: {soak['machine']['load_average']} (2 cores shared with "
        "other sessions).",
        "",
    ]
    if "comparison" in soak:
        c = soak["comparison"]
        ratios = ", ".join(f"{k}: ×{v}" for k, v in c["p99_ratio_per_stream"].items())
        out += [f"Each good stream's p99, hostile over quiet: {ratios}; frames lost: {c['frames_lost']}.", ""]
    for name, ph in soak["phases"].items():
        r, st, rest = ph["rss_mb"], ph["stream"], ph["rest"]
        lat, rest_lat = st["latency_ms"], rest["latency_ms"]
        rows = [
            ["RSS start / after warm-up / end / max (MB)",
             f"{r['start']} / {r['after_warmup']} / {r['end']} / {r['max']}"],
            [f"RSS slope after {r['warmup_s']:g} s warm-up (MB/min)", r["slope_after_warmup_mb_per_min"]],
            ["streams completed; frames sent / answered / lost",
             f"{st['completed']}; {st['frames_sent']} / {st['frames_answered']} / {st['frames_lost']}"],
            ["stream closes", ", ".join(f"{k}: {v}" for k, v in st["closes"].items())],
            ["stream latency p50 / p99 (ms)", f"{lat.get('p50')} / {lat.get('p99')}"],
            ["REST answers", ", ".join(f"{k}: {v}" for k, v in rest["status"].items())],
            ["REST latency p50 / p99 (ms)", f"{rest_lat.get('p50')} / {rest_lat.get('p99')}"],
            ["5xx answers (all clients)", ", ".join(f"{k}: {v}" for k, v in ph["http_5xx"].items()) or "0"],
            ["1011 closes", ph["ws_1011"]],
        ]  # fmt: skip
        out += [f"**{name}**", "", *_table(["", "value"], rows)]
        actions = ph["hostile_actions"].items()
        hostile = [[k, ", ".join(f"{o}: {n}" for o, n in v.items())] for k, v in actions]
        if hostile:
            out += _table(["hostile action", "answers"], hostile)
    rows = [
        ["server error counters", ", ".join(f"{k} {v:g}" for k, v in soak["server_counters"].items()) or "–"],
        ["tracebacks in the server log", soak["tracebacks_in_server_log"]],
    ]  # fmt: skip
    out += _table(["whole run", "value"], rows)
    return out


def machine_section(run_all: dict | None, docs: list[dict]) -> list[str]:
    first = next((d for d in docs if d), None)
    if not first:
        return []
    m = first["machine"]
    pk = m["packages"]
    out = ["## Machine and commands", ""]
    out += [
        f"- CPU: {m['cpu_model']}, {m['cpu_count']} cores ({m['cpus_usable']} usable); "
        f"GPU: {m['gpu'] or 'none'}",
        f"- {m['platform']}, Python {m['python']}; "
        + ", ".join(f"{k} {v}" for k, v in pk.items() if v is not None),
        f"- commit {m['git_commit']}",
    ]
    if run_all:
        out += [
            f"- load average (1/5/15 min) before: {run_all['load_average_before']}, "
            f"after: {run_all['load_average_after']}",
            f"- `{run_all['command']}` took {run_all['wall_s']:.0f} s: "
            + ", ".join(
                f"{s['section']} {s['wall_s']:.0f} s" + (" (FAILED)" if s["error"] else "")
                for s in run_all["sections"]
            ),
        ]
    for d in docs:
        if d:
            out.append(
                f"- `{d['command']}` ({d['wall_s']:.0f} s, "
                f"load average at the end {d['machine']['load_average']})"
            )
    return [*out, ""]


INTRO = """# Performance

Every figure on this page was written by `make bench` (`.venv/bin/python -m benchmarks.run_all`)
into `benchmarks/results/*.json` and rendered by `benchmarks/report.py`; rerun it to refresh the
page. The machines these run on are shared: absolute CPU times move with the load average
(recorded below), so compare the ratios measured side by side in one run — the model backends
are interleaved repetition by repetition, and the variants of the streaming path are visited in
turn by one stream, round after round. The networks are untrained presets (seed 0): weights do not
change the time. Benchmarks are not tests; nothing here is asserted in the test suite.
"""


def write_report(folder: Path = RESULTS, out: Path | None = None) -> Path:
    folder = Path(folder)
    out = Path(out) if out else REPO / "docs" / "performance.md"
    model, stream = _load(folder, "model_latency"), _load(folder, "streaming")
    rest, stages = _load(folder, "rest"), _load(folder, "stages")
    gpu_model, gpu_stream = _load(folder, "model_latency-cuda"), _load(folder, "streaming-cuda")
    run_all = _load(folder, "run_all")
    faults = [_load(folder, p.stem) for p in sorted(folder.glob("faults*.json"))]
    soaks = [_load(folder, p.stem) for p in sorted(folder.glob("soak*.json"))]
    lines = [INTRO]
    lines += targets(model, stream, gpu_model, gpu_stream)
    lines += findings(model, stream, rest, stages)
    lines += model_section(model, "Model latency (CPU)")
    lines += stream_section(stream, "Streaming end to end (CPU, loopback)")
    lines += rest_section(rest)
    lines += stages_section(stages)
    if gpu_model or gpu_stream:
        lines += model_section(gpu_model, "Model latency (GPU)")
        lines += stream_section(gpu_stream, "Streaming end to end (GPU machine)")
    lines += faults_section(faults)
    for soak in soaks:
        lines += soak_section(soak)
    lines += machine_section(run_all, [model, stream, rest, stages, gpu_model, gpu_stream, *faults, *soaks])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines).rstrip() + "\n")
    return out


if __name__ == "__main__":
    print(write_report(Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS))
