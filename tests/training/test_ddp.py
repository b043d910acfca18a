"""DDP on CPU: two gloo processes launched by torchrun train a few steps and end with identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml

from training.trainer.progress import read_log

pytestmark = pytest.mark.slow

# Each rank trains through the real entry point, then dumps what it holds for the test to compare.
WORKER = textwrap.dedent(
    """
    import os, sys, torch
    from training.train import fit
    from training.trainer.config import load_config

    trained = fit(load_config(sys.argv[1]))
    rank = int(os.environ["RANK"])
    torch.save(
        {"student": trained.student.state_dict(), "teacher": trained.teacher.state_dict(),
         "world": int(os.environ["WORLD_SIZE"]), "step": trained.step},
        os.path.join(sys.argv[2], f"rank{rank}.pt"),
    )
    """
)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from training.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("synth"), videos=8, frames=12, size=32, seed=5)


def test_two_gloo_processes_hold_identical_weights(synth, tmp_path):
    config = {
        "model": {"preset": "tiny"},
        "data": {"root": str(synth), "windows_per_video": 2},
        "steps": 3,
        "batch_size": 2,
        "unlabelled_batch_size": 2,
        "lr": 1e-3,
        "eval_every": 3,
        "log_every": 1,
        "device": "cpu",
        "threads": 1,
        "out_dir": str(tmp_path / "runs"),
        "run_name": "ddp",
        "progress": False,
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "worker.py").write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [str(tmp_path / "worker.py"), str(tmp_path / "cfg.yaml"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert r0["world"] == r1["world"] == 2 and r0["step"] == r1["step"] == 3
    assert r0["student"].keys() == r1["student"].keys()
    # The weights moved (the EMA teacher lags the trained student), and moved alike on both ranks.
    assert any(not torch.equal(v, r0["teacher"][k]) for k, v in r0["student"].items())
    for net in ("student", "teacher"):
        for key, value in r0[net].items():
            assert torch.equal(value, r1[net][key]), f"{net} {key} differs between ranks"

    # Rank 0 alone wrote the run; the logged metrics are averaged over both ranks.
    run_dir = tmp_path / "runs" / "ddp"
    assert (run_dir / "last" / "student.safetensors").is_file() and (run_dir / "best").is_dir()
    assert [s for s, _ in read_log(run_dir / "log.csv")["loss"]] == [1, 2, 3]


# Each rank builds the training streams through the trainer's own code, draws an epoch and a half,
# then builds them again (as a resumed run does), restores the saved position and draws again.
STREAMS = textwrap.dedent(
    """
    import json, sys, torch
    import torch.distributed as dist
    from training.train import _build_data, model_config_of
    from training.trainer.config import load_config
    from training.trainer.distributed import cleanup, init_distributed

    cfg = load_config(sys.argv[1])
    info = init_distributed("cpu")
    config, cpu = model_config_of(cfg), torch.device("cpu")

    def draw(stream, n):
        return [stream.next() for _ in range(n)]

    def record(batches):
        return [[b["index"].tolist(), float(b["frames"].double().sum())] for b in batches]

    out = {}
    labelled, unlabelled, _, _ = _build_data(cfg, config, info, cpu)
    for name, stream in (("labelled", labelled), ("unlabelled", unlabelled)):
        n = stream.batches_per_epoch
        epoch0, epoch1 = record(draw(stream, n)), record(draw(stream, 1))
        state = stream.state_dict()
        out[name] = {"items": len(stream.dataset), "per_epoch": n, "epoch0": epoch0, "epoch1": epoch1,
                     "state": state, "tail": record(draw(stream, n))}
    labelled, unlabelled, _, _ = _build_data(cfg, config, info, cpu)
    for name, stream in (("labelled", labelled), ("unlabelled", unlabelled)):
        stream.load_state_dict(out[name]["state"])
        out[name]["resumed"] = record(draw(stream, out[name]["per_epoch"]))
    gathered = [None] * info.world_size
    dist.all_gather_object(gathered, out)
    if info.rank == 0:
        json.dump(gathered, open(sys.argv[2], "w"))
    cleanup()
    """
)


def test_two_gloo_ranks_draw_disjoint_items_and_resume_in_order(tmp_path):
    from training.data.synthetic import generate

    # 9 clips: 7 TRAIN, so 14 labelled and 35 unlabelled windows; an odd count is where a padded
    # sampler would hand one window to both ranks.
    synth = generate(tmp_path / "synth", videos=9, frames=12, size=32, seed=6)
    config = {
        "model": {"preset": "tiny"},
        "data": {"root": str(synth), "windows_per_video": 5, "num_workers": 1, "prefetch_factor": 2},
        "batch_size": 2,
        "unlabelled_batch_size": 3,
        "device": "cpu",
        "progress": False,
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "streams.py").write_text(STREAMS)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [str(tmp_path / "streams.py"), str(tmp_path / "cfg.yaml"), str(tmp_path / "out.json")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = json.loads((tmp_path / "out.json").read_text())

    for name, batch in (("labelled", 2), ("unlabelled", 3)):
        r0, r1 = ranks[0][name], ranks[1][name]
        assert (
            r0["items"] == r1["items"] and r0["per_epoch"] == r1["per_epoch"] == r0["items"] // 2 // batch > 1
        )
        seen = [[i for indices, _ in r["epoch0"] for i in indices] for r in (r0, r1)]
        # Within an epoch: whole batches, no item twice on a rank, no item on both ranks.
        assert (
            len(set(seen[0])) == len(seen[0]) == len(seen[1]) == len(set(seen[1])) == r0["per_epoch"] * batch
        )
        assert not set(seen[0]) & set(seen[1]), f"{name}: ranks share items"
        for r in (r0, r1):
            # The next epoch is drawn anew; a rebuilt stream restored to the saved position draws the
            # same items with the same pixels (windows, augmentation) as the uninterrupted stream.
            assert r["epoch1"][0] != r["epoch0"][0]
            assert r["state"] == {"epoch": 1, "batch": 1}
            assert r["resumed"] == r["tail"]
