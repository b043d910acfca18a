"""Training smoke test: the tiny preset learns on synthetic echoes, and the teacher is the student's EMA."""

from __future__ import annotations

import json

import pytest
import torch

from training.model.io import load_pretrained
from training.train import fit, run
from training.trainer.config import TrainConfig, load_config
from training.trainer.progress import read_log

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from training.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("synth"), videos=8, frames=16, size=32, seed=0)


def _cfg(root, out, **changes) -> TrainConfig:
    base = {
        "model": {"preset": "tiny"},
        "data": {"root": str(root), "windows_per_video": 4},
        "steps": 60,
        "batch_size": 4,
        "unlabelled_batch_size": 4,
        "lr": 3e-3,
        "eval_every": 30,
        "log_every": 5,
        "out_dir": str(out),
        "progress": False,
        "run_name": "smoke",
    }
    return TrainConfig.from_dict({**base, **changes})


def test_mean_teacher_training_lowers_the_loss_and_writes_a_complete_run(synth, tmp_path):
    run_dir = run(_cfg(synth, tmp_path))

    log = read_log(run_dir / "log.csv")
    sup = [v for _, v in log["sup_loss"]]
    assert len(sup) == 12
    assert sum(sup[-3:]) / 3 < 0.8 * sum(sup[:3]) / 3, sup
    assert [s for s, _ in log["val_dice"]] == [30, 60]
    lam = [v for _, v in log["lambda"]]
    assert lam == sorted(lam) and 0 < lam[-1] <= 1  # lambda(t) ramps up
    lr = [v for _, v in log["lr"]]
    assert lr == sorted(lr, reverse=True) and lr[0] <= 3e-3  # poly decay

    for name in ("best", "last"):
        assert {p.name for p in (run_dir / name).iterdir()} >= {
            "config.json",
            "student.safetensors",
            "teacher.safetensors",
        }
    assert (run_dir / "last" / "state.pt").is_file()
    assert {p.name for p in (run_dir / "plots").glob("*.png")} == {
        "loss.png",
        "dice.png",
        "lr.png",
        "lambda.png",
    }
    assert load_config(run_dir / "config.yaml") == _cfg(synth, tmp_path)

    # Loading needs no YAML: the checkpoint carries the model config and its meta.
    model, config, meta = load_pretrained(run_dir)
    assert config.preset == "tiny" and meta["step"] in (30, 60) and meta["mode"] == "mean_teacher"
    assert json.loads((run_dir / "best" / "config.json").read_text())["meta"]["metrics"]["val_dice"] >= 0
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 1, 32, 32)


def test_teacher_follows_the_ema_rule_step_by_step(synth, tmp_path):
    """theta'_t = eta * theta'_{t-1} + (1 - eta) * theta_t, checked on the real loop at step 5."""
    cfg = _cfg(synth, tmp_path, steps=5, stop_after=4, eval_every=100)
    before = fit(cfg)
    teacher_prev = {k: v.clone() for k, v in before.teacher.named_parameters()}
    after = fit(_cfg(synth, tmp_path, steps=5, eval_every=100), resume=before.run_dir)
    assert after.step == 5
    student = dict(after.student.named_parameters())
    differs = 0
    for name, teacher_now in after.teacher.named_parameters():
        expected = 0.99 * teacher_prev[name] + 0.01 * student[name]
        torch.testing.assert_close(teacher_now, expected, rtol=1e-6, atol=1e-7)
        differs += not torch.equal(teacher_now, student[name])
    assert differs > 0  # the teacher lags the student
    # The teacher keeps running statistics of its own activations (its train-mode forward passes).
    student_buffers = dict(after.student.named_buffers())
    assert any(
        b.is_floating_point() and not torch.equal(b, student_buffers[n])
        for n, b in after.teacher.named_buffers()
    )


def test_supervised_mode_has_no_teacher_and_an_epoch_budget_counts_labelled_batches(synth, tmp_path):
    trained = fit(_cfg(synth, tmp_path, mode="supervised", steps=None, epochs=1, eval_every=100))
    train_videos = (synth / "FileList.csv").read_text().count(",TRAIN")
    assert trained.step == (2 * train_videos) // 4  # ED + ES windows per video, whole batches of 4
    assert trained.teacher is None
    assert not (trained.run_dir / "last" / "teacher.safetensors").exists()
    log = read_log(trained.run_dir / "log.csv")
    assert all(v == 0 for _, v in log["cons_loss"]) and "val_dice_teacher" not in log


def test_a_run_directory_is_never_overwritten(synth, tmp_path):
    cfg = _cfg(synth, tmp_path, steps=1, eval_every=1)
    run(cfg)
    with pytest.raises(ValueError, match="already holds a run"):
        run(cfg)


@pytest.mark.gpu
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_training_on_gpu(synth, tmp_path, amp):
    trained = fit(_cfg(synth, tmp_path, device="cuda", amp=amp, steps=4, eval_every=4, run_name=amp))
    assert trained.step == 4
    assert all(torch.isfinite(p).all() for p in trained.student.parameters())
    assert next(trained.student.parameters()).device.type == "cuda"
