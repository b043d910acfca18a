"""DDP on CPU: two gloo processes launched by torchrun train a few steps and end with identical weights."""

from __future__ import annotations

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
