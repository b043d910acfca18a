"""The training data pipeline alone (no model): windows per second and memory, frame store vs baseline.

    .venv/bin/python -m benchmarks.data_pipeline                 # the full run (about 15 min on 2 cores)
    .venv/bin/python -m benchmarks.data_pipeline --quick         # 40 and 80 clips, short runs

Data: synthetic EchoNet-format sets of ``--videos`` clips at each ``--sizes`` frame size, generated
once into ``$ECHOSEG_CACHE/bench`` (``~/.cache/echoseg/bench``). The generator renders ``--unique``
clips; larger sets repeat them under new names (each name is a separate file to decode, store and
cache, which is what memory and throughput depend on). Measured, each in a fresh child process:

* ``prepare``: ``echoseg data prepare`` into an empty store, seconds per clip (the first-epoch cost
  of the store) and its size on disk;
* ``throughput``: the unlabelled training stream (``BatchStream`` over the store, augmentation on)
  read for ``--seconds`` after its first batch, with 0 (in-process: the rate of one core), 1, 2 and
  4 workers, at the frame size as input (``lite`` at 112, ``paper`` at 256) and, for 112-pixel
  clips, at 256 (EchoNet-Dynamic under the ``paper`` preset);
* ``memory``: both training streams (labelled and unlabelled, ``--mem-workers`` workers each),
  read until the unlabelled stream has finished an epoch (every clip touched), sampled every
  0.25 s as PSS summed over the child and its workers (``/proc/<pid>/smaps_rollup``; pages shared
  by the processes count once). The same run with the baseline pipeline (the commit before the
  store: per-process caches of decoded clips) is measured beside it and stopped once it passes
  ``--cap-mb``;
* ``eval``: ``echoseg eval`` (``training.evaluate.evaluate``) of the bundled model on every clip
  of an ``--eval-videos`` set, PSS sampled the same way (flat memory = no growth with clips seen).

It ends with what a GPU needs: the ``paper`` preset's training FLOPs per step (counted by
``torch.utils.flop_counter`` on one forward window: a step is 3x forward for the student's
labelled + unlabelled windows and 1x for the teacher's), an H100's step rate at an assumed model
FLOP utilisation, and how many cores at the measured per-core window rate keep it fed.
Results: ``benchmarks/results/data_pipeline.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, document, write_result

log = logging.getLogger(__name__)

BASELINE = "4d34f1b"  # the last commit before the frame store (EchoNetDataset cached decoded clips)
H100_BF16_DENSE_TFLOPS = 989.0  # H100 SXM, dense bf16 tensor-core peak (NVIDIA datasheet)
ASSUMED_MFU = (0.2, 0.4)  # model FLOP utilisation range assumed for a conv net with custom ops
PAPER_BATCH = (4, 4)  # configs/paper.yaml: labelled, unlabelled windows per step and GPU
GPU_NODE_CORES_PER_GPU = (12, 24)  # typical 8-GPU H100 nodes: 96-192 usable cores


def cache_dir() -> Path:
    base = Path(os.environ.get("ECHOSEG_CACHE") or Path.home() / ".cache" / "echoseg")
    return base / "bench"


# -- data sets ---------------------------------------------------------------------------------
def dataset(videos: int, size: int, frames: int, unique: int) -> Path:
    """A synthetic set of ``videos`` clips (``unique`` rendered, the rest repeated under new names)."""
    from training.data.synthetic import generate

    unique = min(unique, videos)
    base = cache_dir() / f"synth-{unique}x{frames}f-{size}px"
    if not (base / "FileList.csv").is_file():
        log.info("generating %d synthetic clips of %d frames at %d px (once)", unique, frames, size)
        generate(base.with_suffix(".tmp"), unique, frames=frames, size=size, seed=13)
        os.replace(base.with_suffix(".tmp"), base)
    if videos == unique:
        return base
    out = cache_dir() / f"synth-{videos}of{unique}x{frames}f-{size}px"
    if not (out / "FileList.csv").is_file():
        _repeat(base, out.with_suffix(".tmp"), videos)
        os.replace(out.with_suffix(".tmp"), out)
    return out


def _repeat(base: Path, out: Path, videos: int) -> None:
    """Copies of ``base``'s clips under new names (hard links where possible) up to ``videos`` clips."""
    import csv

    shutil.rmtree(out, ignore_errors=True)
    (out / "Videos").mkdir(parents=True)
    (out / "Masks").mkdir()
    with open(base / "FileList.csv") as fh:
        rows = list(csv.reader(fh))
    with open(base / "VolumeTracings.csv") as fh:
        tracings = list(csv.reader(fh))
    header, rows = rows[0], rows[1:]
    filelist, traced = [header], [tracings[0]]
    for i in range(videos):
        row = list(rows[i % len(rows)])
        old, new = row[0], f"{row[0]}R{i:05d}"
        row[0] = new
        filelist.append(row)
        for ext, sub in ((".avi", "Videos"), (".npy", "Masks")):
            src, dst = base / sub / f"{old}{ext}", out / sub / f"{new}{ext}"
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
        traced += [[f"{new}.avi", *t[1:]] for t in tracings[1:] if t[0] == f"{old}.avi"]
    for name, table in (("FileList.csv", filelist), ("VolumeTracings.csv", traced)):
        with open(out / name, "w", newline="") as fh:
            csv.writer(fh).writerows(table)


def baseline_tree(ref: str) -> Path:
    """``training`` and ``echoseg`` of commit ``ref``, extracted once (``git archive``)."""
    out = cache_dir() / f"baseline-{ref}"
    if not (out / "training").is_dir():
        tmp = out.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "archive", ref, "training", "echoseg"], cwd=REPO, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        os.replace(tmp, out)
    return out


# -- memory of a process tree -------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
            out += [int(c) for c in text]
    except OSError:
        pass
    return out


def tree_pss_mb(pid: int) -> tuple[float, int]:
    """PSS of ``pid`` and all its descendants in MB, and how many processes that is."""
    total, count, todo = 0, 0, [pid]
    while todo and count < 256:  # bounded: a loader has a handful of workers
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    count += 1
                    break
        except OSError:
            continue
        todo += _children(p)
    return total / 1024.0, count


def run_child(spec: dict, baseline: Path | None, cap_mb: float, timeout_s: float) -> dict:
    """Run :func:`child` in a fresh process (with the baseline's code when given), sampling its PSS."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cwd = REPO
    if baseline is not None:  # the baseline's packages first; this tree's benchmarks module after
        env["PYTHONPATH"] = os.pathsep.join([str(baseline), str(REPO)])
        cwd = baseline
    cmd = [sys.executable, "-m", "benchmarks.data_pipeline", "--child", json.dumps(spec)]
    started = time.perf_counter()
    samples, stopped = [], None
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.PIPE, text=True)
        while proc.poll() is None:
            t = time.perf_counter() - started
            pss, n = tree_pss_mb(proc.pid)
            if n:
                samples.append([round(t, 2), round(pss, 1), n])
            if pss > cap_mb or t > timeout_s:
                stopped = (
                    f"PSS {pss:.0f} MB > cap {cap_mb:.0f} MB"
                    if pss > cap_mb
                    else f"timeout {timeout_s:.0f} s"
                )
                _kill_tree(proc.pid)
                proc.wait(timeout=30)
                break
            time.sleep(0.25)
        err = proc.stderr.read() if proc.stderr else ""
        out.seek(0)
        lines = [line for line in out.read().splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if lines else {}
    if not lines and stopped is None:
        raise RuntimeError(f"child failed ({proc.returncode}): {err[-2000:]}")
    pss = [s[1] for s in samples]
    result.update(
        pss_samples=samples,
        pss_peak_mb=max(pss, default=None),
        pss_end_mb=pss[-1] if pss else None,
        stopped=stopped,
        progress=result.get("progress") or _last_progress(err),
    )
    return result


def quarters(samples: list[list[float]]) -> list[float] | None:
    """PSS (MB) at 25, 50, 75 and 100 % of a run's duration, from ``[t, pss, n]`` samples."""
    if not samples:
        return None
    end = samples[-1][0]
    return [next(p for t, p, _ in samples if t >= end * q) for q in (0.25, 0.5, 0.75, 1.0)]


def _last_progress(stderr: str) -> dict | None:
    for line in reversed(stderr.splitlines()):
        if line.startswith("progress "):
            return json.loads(line[len("progress ") :])
    return None


def _kill_tree(pid: int) -> None:
    import signal

    for p in [pid, *_children(pid)]:
        with contextlib.suppress(OSError):
            os.kill(p, signal.SIGKILL)


# -- what a child process does ------------------------------------------------------------------
def child(spec: dict) -> dict:
    """One measurement, run in its own process (see :func:`run_child`); prints its result as JSON."""
    if spec["kind"] == "eval":
        return _child_eval(spec)
    import torch

    from echoseg.presets import get_preset

    try:
        from training.data.dataset import EchoNetDataset
    except ImportError:  # the baseline commit's tree, where it lived in training.data.echonet
        from training.data.echonet import EchoNetDataset
    from training.trainer.data import BatchStream
    from training.trainer.distributed import DistInfo

    torch.set_num_threads(1)
    config = get_preset(spec["preset"])
    if spec.get("input_size"):
        config = config.replace(input_size=spec["input_size"])

    def stream(mode: str, seed: int) -> BatchStream:
        data = EchoNetDataset(
            spec["root"], "TRAIN", config, mode=mode, augment=True, seed=0, windows_per_video=spec["wpv"]
        )
        return BatchStream(data, spec["batch"], DistInfo(), seed, spec["workers"])

    streams = {"unlabelled": stream("unlabelled", 1)}
    if spec["kind"] == "memory":
        streams["labelled"] = stream("labelled", 0)
    unlabelled = streams["unlabelled"]
    windows, first, last_report = 0, None, 0.0
    start = time.perf_counter()
    for _ in range(10**7):  # bounded; ends on time or on the end of the first unlabelled epoch
        for s in streams.values():
            windows += len(s.next()["frames"])
        now = time.perf_counter()
        if first is None:
            first, windows = now, 0  # steady state from the first batch on (workers started)
        if now - last_report > 1.0:
            progress = {"t": round(now - start, 1), "windows": windows, "epoch": unlabelled.epoch}
            print("progress " + json.dumps(progress), file=sys.stderr, flush=True)
            last_report = now
        if spec["kind"] == "throughput" and now - first >= spec["seconds"]:
            break
        if spec["kind"] == "memory" and unlabelled.epoch >= 1:
            break
    elapsed = time.perf_counter() - first
    return {
        "windows": windows,
        "seconds": round(elapsed, 2),
        "windows_per_s": round(windows / elapsed, 1),
        "first_batch_s": round(first - start, 2),
        "clips": len(unlabelled.dataset.names),
    }


def _child_eval(spec: dict) -> dict:
    import torch

    from training.evaluate import evaluate

    torch.set_num_threads(1)
    start = time.perf_counter()
    out = evaluate(REPO / "models" / "default", spec["root"], split="ALL", batch_size=16)
    return {
        "clips": out["n_clips"],
        "frames": out["timing"]["frames"],
        "seconds": round(time.perf_counter() - start, 1),
        "dice_traced": out["traced"]["dice"]["mean"],
    }


# -- the benchmark -------------------------------------------------------------------------------
def measure_prepare(root: Path, workers: int) -> dict:
    from training.data.store import prepare

    store = cache_dir() / "stores" / root.name
    shutil.rmtree(store, ignore_errors=True)
    report = prepare(root, store, workers=workers)
    n = report.decoded
    return {
        "store": str(store),
        "clips": n,
        "workers": workers,
        "seconds": round(report.seconds, 2),
        "ms_per_clip": round(1000 * report.seconds / n, 1),
        "store_mb": round(report.bytes / 1e6, 1),
        "mb_per_clip": round(report.bytes / 1e6 / n, 2),
    }


def gpu_need(windows_per_core_s: float | None) -> dict:
    """The ``paper`` preset's training step on an H100, estimated from FLOPs, and the cores it needs."""
    import torch

    from training.model import build_model, get_preset
    from training.model.summary import count_flops

    torch.manual_seed(0)
    flops = count_flops(build_model(get_preset("paper")).eval())  # one window, forward
    labelled, unlabelled = PAPER_BATCH
    step_flops = 3 * flops * (labelled + unlabelled) + flops * unlabelled
    out = {
        "forward_gflops_per_window": round(flops / 1e9, 1),
        "step_gflops": round(step_flops / 1e9, 1),
        "batch": {"labelled": labelled, "unlabelled": unlabelled},
        "how": (
            "step FLOPs = 3 x forward FLOPs x (labelled + unlabelled windows) [student forward + backward]"
            " + forward FLOPs x unlabelled windows [teacher]; step rate = H100 dense bf16 peak x MFU"
            " / step FLOPs"
        ),
        "h100_bf16_dense_tflops": H100_BF16_DENSE_TFLOPS,
        "assumed_mfu": list(ASSUMED_MFU),
        "cores_per_gpu_on_a_node": list(GPU_NODE_CORES_PER_GPU),
    }
    rates = [H100_BF16_DENSE_TFLOPS * 1e12 * mfu / step_flops for mfu in ASSUMED_MFU]
    out["steps_per_s"] = [round(r, 1) for r in rates]
    out["windows_per_s_needed"] = [round(r * (labelled + unlabelled)) for r in rates]
    if windows_per_core_s:
        out["windows_per_core_s_measured"] = windows_per_core_s
        out["cores_needed"] = [round(w / windows_per_core_s, 1) for w in out["windows_per_s_needed"]]
        out["keeps_up"] = out["cores_needed"][-1] <= GPU_NODE_CORES_PER_GPU[0]
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks.data_pipeline", description=__doc__.splitlines()[0])
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="40/80 clips, 5 s runs")
    p.add_argument("--videos", nargs="+", type=int, default=None, help="set sizes (default 100 500)")
    p.add_argument("--unique", type=int, default=100, help="clips rendered per frame size; the rest repeat")
    p.add_argument("--sizes", nargs="+", type=int, default=[112, 256], help="clip frame sizes")
    p.add_argument("--frames", type=int, default=96, help="frames per clip (EchoNet: about 177)")
    p.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2, 4], help="throughput runs")
    p.add_argument("--mem-workers", type=int, default=4, help="workers per stream in the memory runs")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--wpv", type=int, default=8, help="unlabelled windows per clip and epoch")
    p.add_argument("--seconds", type=float, default=None, help="each throughput run (default 12, quick 5)")
    p.add_argument("--prepare-workers", type=int, default=2)
    p.add_argument("--cap-mb", type=float, default=3000.0, help="stop a memory run above this PSS")
    p.add_argument("--timeout-s", type=float, default=600.0, help="stop any child after this long")
    p.add_argument("--baseline", default=BASELINE, help="git ref of the pipeline measured beside (or 'none')")
    p.add_argument(
        "--eval-videos", type=int, default=None, help="clips of the eval run (default 500, quick 80)"
    )
    p.add_argument("--eval-frames", type=int, default=8, help="frames per clip of the eval set")
    p.add_argument(
        "--skip", nargs="*", default=[], choices=("prepare", "throughput", "memory", "eval", "gpu")
    )
    p.add_argument("--out-dir", type=Path, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))), flush=True)
        return 0
    started = time.time()
    videos = args.videos or ([40, 80] if args.quick else [100, 500])
    seconds = args.seconds or (5.0 if args.quick else 12.0)
    eval_videos = args.eval_videos or (80 if args.quick else 500)
    unique = min(args.unique, min(videos))
    baseline = None if args.baseline == "none" else baseline_tree(args.baseline)
    presets = {112: "lite", 256: "paper"}
    sets = {(n, s): dataset(n, s, args.frames, unique) for s in args.sizes for n in videos}

    prepared = {}
    for (n, s), root in sets.items():
        if "prepare" in args.skip:
            continue
        prepared[f"{n}x{s}"] = measure_prepare(root, args.prepare_workers)
        print(f"prepare {n} clips at {s} px: {prepared[f'{n}x{s}']}", flush=True)
    stores = {key: cache_dir() / "stores" / root.name for key, root in sets.items()}

    throughput = []
    if "throughput" not in args.skip:
        n = min(videos)
        for s in args.sizes:
            for input_size in sorted({s, 256} if s == 112 else {s}):
                for w in args.workers:
                    spec = {"kind": "throughput", "root": str(stores[(n, s)]), "preset": presets[input_size],
                            "input_size": input_size, "workers": w, "batch": args.batch, "wpv": args.wpv,
                            "seconds": seconds}  # fmt: skip
                    r = run_child(spec, None, args.cap_mb, args.timeout_s)
                    r.pop("pss_samples")
                    r["train_clips"] = r.pop("clips", None)
                    row = {"clips": n, "clip_px": s, "input_px": input_size, "workers": w, **r}
                    row["windows_per_s_per_worker"] = round(r["windows_per_s"] / max(w, 1), 1)
                    throughput.append(row)
                    print(
                        f"throughput {s}->{input_size} px, {w} workers: {r['windows_per_s']} windows/s",
                        flush=True,
                    )

    memory = []
    if "memory" not in args.skip:
        s = 256 if 256 in args.sizes else max(args.sizes)
        for n in videos:
            for pipeline in ["store", "baseline"] if baseline is not None else ["store"]:
                root = stores[(n, s)] if pipeline == "store" else sets[(n, s)]
                spec = {"kind": "memory", "root": str(root), "preset": presets.get(s, "paper"),
                        "input_size": s, "workers": args.mem_workers, "batch": args.batch,
                        "wpv": args.wpv}  # fmt: skip
                r = run_child(spec, baseline if pipeline == "baseline" else None, args.cap_mb, args.timeout_s)
                r["train_clips"] = r.pop("clips", None)
                memory.append({"pipeline": pipeline, "clips": n, "clip_px": s, **r})
                memory[-1]["pss_by_quarter_mb"] = quarters(r["pss_samples"])
                note = r["stopped"] or ""
                print(
                    f"memory {pipeline} {n} clips at {s} px: peak PSS {r['pss_peak_mb']} MB {note}",
                    flush=True,
                )

    evaluation = None
    if "eval" not in args.skip:
        root = dataset(eval_videos, 112, args.eval_frames, min(args.unique, eval_videos))
        r = run_child({"kind": "eval", "root": str(root)}, None, args.cap_mb, args.timeout_s * 2)
        evaluation = {"clips": eval_videos, "frames_per_clip": args.eval_frames, **r}
        evaluation["pss_by_quarter_mb"] = quarters(r["pss_samples"])
        print(
            f"eval {eval_videos} clips: PSS at 25/50/75/100 % of the run {evaluation['pss_by_quarter_mb']} MB"
        )

    per_core = next(
        (t["windows_per_s"] for t in throughput if t["workers"] == 0 and t["input_px"] == 256), None
    )
    need = gpu_need(per_core) if "gpu" not in args.skip else None
    doc = document(
        "data_pipeline",
        argv,
        started,
        baseline=args.baseline,
        settings={
            "videos": videos,
            "unique_clips": unique,
            "sizes": args.sizes,
            "frames": args.frames,
            "batch": args.batch,
            "windows_per_video": args.wpv,
            "mem_workers_per_stream": args.mem_workers,
            "cap_mb": args.cap_mb,
            "throughput_seconds": seconds,
        },
        prepare=prepared,
        throughput=throughput,
        memory=memory,
        eval=evaluation,
        gpu_need=need,
    )
    print(f"wrote {write_result(doc, args.out_dir)}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
