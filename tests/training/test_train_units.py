"""Unit tests of the training engine's parts: losses, EMA teacher, perturbations, config, streams, logs."""

from __future__ import annotations

import math

import pytest
import torch
import yaml
from torch import nn

from training.trainer.config import TrainConfig, apply_overrides, load_config, save_config
from training.trainer.data import BatchStream
from training.trainer.distributed import DistInfo
from training.trainer.losses import (
    batch_dice,
    bce_loss,
    bernoulli_kl,
    consistency_loss,
    consistency_weight,
    dice_loss,
)
from training.trainer.mean_teacher import ema_update, make_teacher, perturb
from training.trainer.plots import plot_curves
from training.trainer.progress import MetricLog, read_log


class _StandIn(nn.Module):
    """A tiny conv net with BatchNorm (parameters and buffers) standing in for EchoSegNet."""

    def __init__(self, k: int = 3):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(k, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 1, 1)
        )

    def forward(self, x):
        return self.body(x)


# -- losses ------------------------------------------------------------------------------------------


def test_dice_loss_is_zero_for_a_confident_exact_prediction_and_one_for_the_complement():
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:6, 2:6] = 1
    exact = (target * 2 - 1) * 50.0  # logits: +50 inside, -50 outside
    assert dice_loss(exact, target).item() == pytest.approx(0.0, abs=1e-5)
    assert dice_loss(-exact, target).item() == pytest.approx(1.0, abs=1e-5)


def test_dice_loss_matches_the_papers_formula():
    torch.manual_seed(0)
    logits, target = torch.randn(1, 1, 6, 6), (torch.rand(1, 1, 6, 6) > 0.5).float()
    p = torch.sigmoid(logits)
    expected = 1 - 2 * (p * target).sum() / ((p * p).sum() + (target * target).sum())
    assert dice_loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-4)


def test_bce_matches_manual_cross_entropy():
    torch.manual_seed(1)
    logits, target = torch.randn(2, 1, 5, 5), (torch.rand(2, 1, 5, 5) > 0.5).float()
    p = torch.sigmoid(logits)
    manual = -(target * p.log() + (1 - target) * (1 - p).log()).mean()
    assert bce_loss(logits, target).item() == pytest.approx(manual.item(), rel=1e-5)


def test_bernoulli_kl_matches_the_definition_and_vanishes_for_equal_inputs():
    torch.manual_seed(2)
    zs, zt = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    ps, pt = torch.sigmoid(zs), torch.sigmoid(zt)
    manual = (ps * (ps / pt).log() + (1 - ps) * ((1 - ps) / (1 - pt)).log()).mean()
    assert bernoulli_kl(zs, zt).item() == pytest.approx(manual.item(), rel=1e-5)
    assert bernoulli_kl(zs, zs).item() == pytest.approx(0.0, abs=1e-7)
    assert bernoulli_kl(zs, zt).item() > 0
    # Saturated logits stay finite.
    assert math.isfinite(bernoulli_kl(torch.full((1, 1, 2, 2), 80.0), torch.full((1, 1, 2, 2), -80.0)).item())


def test_consistency_loss_weights_mse_and_kl_and_sends_no_gradient_to_the_teacher():
    torch.manual_seed(3)
    zs = torch.randn(2, 1, 4, 4, requires_grad=True)
    zt = torch.randn(2, 1, 4, 4, requires_grad=True)
    mse = ((torch.sigmoid(zs) - torch.sigmoid(zt)) ** 2).mean()
    expected = 0.5 * mse + 0.5 * bernoulli_kl(zs, zt)
    loss = consistency_loss(zs, zt)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert zs.grad is not None and zs.grad.abs().sum() > 0
    assert zt.grad is None


def test_consistency_weight_ramps_quadratically():
    assert consistency_weight(0, 100) == 0.0
    assert consistency_weight(50, 100) == pytest.approx(0.25)
    assert consistency_weight(100, 100) == pytest.approx(1.0)
    assert consistency_weight(30, 100, max_weight=2.0) == pytest.approx(2.0 * 0.09)
    with pytest.raises(ValueError, match="total_steps"):
        consistency_weight(1, 0)


def test_batch_dice_per_sample():
    gt = torch.zeros(2, 1, 4, 4)
    gt[0, :, :2] = 1
    logits = torch.full((2, 1, 4, 4), -10.0)
    logits[0, :, :1] = 10.0  # half of sample 0's mask
    d = batch_dice(logits, gt)
    assert d[0].item() == pytest.approx(2 * 4 / (4 + 8))
    assert d[1].item() == 1.0  # both empty


# -- mean teacher ---------------------------------------------------------------------------------------


def test_ema_update_follows_equation_12_and_leaves_buffers_to_the_teacher():
    torch.manual_seed(4)
    student = _StandIn()
    teacher = make_teacher(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    student.train()(torch.randn(4, 3, 8, 8))  # moves BatchNorm running statistics
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ema_update(teacher, student, decay=0.99)
    s = student.state_dict()
    for name, _ in student.named_parameters():
        expected = 0.99 * before[name] + 0.01 * s[name]
        torch.testing.assert_close(teacher.state_dict()[name], expected, rtol=0, atol=1e-7)
    for name, _ in student.named_buffers():
        torch.testing.assert_close(teacher.state_dict()[name], before[name], rtol=0, atol=0)


def test_perturbations_are_independent_draws_of_the_same_shape():
    x = torch.zeros(3, 3, 8, 8)
    a, b = perturb(x, 0.1, 0.1, 0.1), perturb(x, 0.1, 0.1, 0.1)
    assert a.shape == x.shape and not torch.equal(a, b)
    assert torch.equal(perturb(x + 1, 0.0, 0.0, 0.0), x + 1)
    # gain and offset act per window (same for the k frames and all pixels)
    g = perturb(torch.ones(2, 3, 4, 4), 0.0, 0.2, 0.0)
    assert torch.allclose(g, g[:, :1, :1, :1].expand_as(g))


# -- config ---------------------------------------------------------------------------------------------


def test_config_from_yaml_with_overrides_and_round_trip(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": {"preset": "tiny"}, "steps": 5, "data": {"root": "x"}}))
    cfg = load_config(
        path, ["data.root=/data/echonet", "lr=0.001", "model.overrides.width=2", "mode=supervised"]
    )
    assert cfg.model.preset == "tiny" and cfg.model.overrides == {"width": 2}
    assert (
        cfg.data.root == "/data/echonet" and cfg.lr == 0.001 and cfg.mode == "supervised" and cfg.steps == 5
    )
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == cfg


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["mode=semi"], "mode must be one of"),
        (["amp=fp8"], "amp must be one of"),
        (["learning_rate=1"], "unknown training config keys"),
        (["data.rooot=x"], r"data\.rooot"),
        (["steps"], "key=value"),
        (["steps=null"], "steps or epochs"),
    ],
)
def test_config_errors_name_the_valid_options(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, overrides)


def test_apply_overrides_does_not_touch_the_input():
    raw = {"data": {"root": "a"}}
    out = apply_overrides(raw, ["data.root=b"])
    assert raw == {"data": {"root": "a"}} and out == {"data": {"root": "b"}}


def test_default_config_matches_the_paper():
    cfg = TrainConfig()
    assert (cfg.lr, cfg.poly_power, cfg.weight_decay, cfg.ema_decay) == (1e-4, 0.9, 1e-6, 0.99)
    assert (cfg.dice_weight, cfg.bce_weight, cfg.mse_weight, cfg.kl_weight) == (0.5, 0.5, 0.5, 0.5)


# -- data streams -----------------------------------------------------------------------------------------


class _Numbers(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n, self.epochs = n, []

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"i": torch.tensor(i)}

    def set_epoch(self, epoch):
        self.epochs.append(epoch)


def _draw(stream, n):
    return [stream.next()["i"].tolist() for _ in range(n)]


def _flat(batches):
    return [i for batch in batches for i in batch]


def test_batch_stream_cycles_epochs_reshuffles_and_resumes_exactly():
    a = BatchStream(_Numbers(10), 3, DistInfo(), seed=7)
    assert a.batches_per_epoch == 3
    first = _draw(a, 7)
    epoch0, epoch1 = _flat(first[:3]), _flat(first[3:6])
    assert len(set(epoch0)) == 9 and len(set(epoch1)) == 9  # whole batches, no repeats in an epoch
    assert epoch0 != epoch1  # reshuffled every epoch
    assert a.dataset.epochs == [0, 1, 2]
    b = BatchStream(_Numbers(10), 3, DistInfo(), seed=7)
    _draw(b, 4)
    c = BatchStream(_Numbers(10), 3, DistInfo(), seed=7)
    c.load_state_dict(b.state_dict())
    assert _draw(c, 3) == first[4:7]


def test_batch_streams_of_two_ranks_are_disjoint():
    r0 = BatchStream(_Numbers(8), 2, DistInfo(rank=0, world_size=2), seed=1)
    r1 = BatchStream(_Numbers(8), 2, DistInfo(rank=1, world_size=2), seed=1)
    seen0, seen1 = _flat(_draw(r0, 2)), _flat(_draw(r1, 2))
    assert sorted(seen0 + seen1) == list(range(8))


# -- logs and plots ---------------------------------------------------------------------------------------


def test_metric_log_truncates_on_resume_and_plots(tmp_path):
    log = MetricLog(tmp_path / "log.csv")
    for step in (10, 20, 30):
        log.write(step, {"loss": 1.0 / step, "lr": 1e-4, "lambda": step / 100, "val_dice": 0.5})
    log.close()
    log = MetricLog(tmp_path / "log.csv", resume_step=20)
    log.write(30, {"loss": 0.5})
    log.close()
    series = read_log(tmp_path / "log.csv")
    assert [s for s, _ in series["loss"]] == [10, 20, 30]
    assert series["loss"][-1] == (30, 0.5)
    paths = plot_curves(tmp_path / "log.csv", tmp_path / "plots")
    assert {p.name for p in paths} == {"loss.png", "dice.png", "lr.png", "lambda.png"}
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


@pytest.mark.parametrize("name", ["tiny", "lite", "paper", "default-model", "simple-model"])
def test_shipped_configs_load_and_name_their_preset(name):
    from pathlib import Path

    from training.train import model_config_of

    path = Path(__file__).resolve().parents[2] / "configs" / f"{name}.yaml"
    cfg = load_config(path)
    # The bundled model is the paper's family; the simple generator's model the first family.
    expected = {"default-model": "lite", "simple-model": "unet-lite"}.get(name, name)
    assert model_config_of(cfg).preset == expected
    assert cfg.mode == "mean_teacher" and cfg.ema_decay == 0.99 and cfg.weight_decay == 1e-6


def test_cli_registers_train_and_eval():
    from echoseg.cli import build_parser

    parser = build_parser()
    train = parser.parse_args(["train", "--config", "c.yaml", "--set", "steps=5", "--set", "lr=0.1"])
    assert train.overrides == ["steps=5", "lr=0.1"] and train.resume is None
    ev = parser.parse_args(["eval", "--checkpoint", "runs/x", "--data", "data/d", "--out", "o"])
    assert (ev.checkpoint, ev.data, ev.split, ev.out) == ("runs/x", "data/d", "TEST", "o")
    assert train.func is not ev.func


def test_train_cli_without_config_is_a_clear_error(capsys):
    from echoseg.cli import main

    assert main(["train"]) == 2
    assert "--config" in capsys.readouterr().out


def test_exponent_floats_in_overrides_and_files_are_numbers(tmp_path):
    """``lr=1e-3`` is a number (YAML 1.2), in ``--set`` and in config files alike."""
    raw = apply_overrides({}, ["lr=1e-3", "weight_decay=-2E-6", "run_name=1e3x", "steps=7"])
    assert raw == {"lr": 0.001, "weight_decay": -2e-6, "run_name": "1e3x", "steps": 7}
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-4\nsteps: 3\n")
    cfg = load_config(path, ["ema_decay=9.9e-1"])
    assert cfg.lr == 1e-4 and isinstance(cfg.lr, float) and cfg.ema_decay == 0.99
