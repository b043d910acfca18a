"""``--resume`` continues a run exactly: 2 + 2 steps give the weights of 4 straight steps."""

from __future__ import annotations

import pytest
import torch

from echoseg.cli import main as echoseg_main
from training.train import fit
from training.trainer.config import TrainConfig
from training.trainer.progress import read_log

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from training.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("synth"), videos=6, frames=12, size=32, seed=3)


def _cfg(root, out, name, **changes) -> TrainConfig:
    base = {
        "model": {"preset": "tiny"},
        "data": {"root": str(root), "windows_per_video": 2, "augment": True, "num_workers": 0},
        "steps": 4,
        "batch_size": 2,
        "unlabelled_batch_size": 2,
        "lr": 1e-3,
        "eval_every": 100,
        "log_every": 1,
        "out_dir": str(out),
        "run_name": name,
        "progress": False,
        "seed": 11,
    }
    return TrainConfig.from_dict({**base, **changes})


def _assert_same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_two_plus_two_steps_equal_four_straight_steps(synth, tmp_path):
    straight = fit(_cfg(synth, tmp_path, "straight"))
    first = fit(_cfg(synth, tmp_path, "split", stop_after=2))
    assert first.step == 2
    second = fit(_cfg(synth, tmp_path, "split"), resume=first.run_dir)
    assert second.step == 4
    _assert_same(straight.student, second.student)
    _assert_same(straight.teacher, second.teacher)
    # The resumed log continues the first one without gaps or repeats.
    assert [s for s, _ in read_log(second.run_dir / "log.csv")["loss"]] == [1, 2, 3, 4]
    assert read_log(second.run_dir / "log.csv")["loss"] == read_log(straight.run_dir / "log.csv")["loss"]


def test_resume_through_the_cli_uses_the_runs_own_config(synth, tmp_path):
    cfg = _cfg(synth, tmp_path, "cli", steps=2, stop_after=1)
    first = fit(cfg)
    assert echoseg_main(["train", "--resume", str(first.run_dir)]) == 0
    assert [s for s, _ in read_log(first.run_dir / "log.csv")["loss"]] == [1, 2]
    assert torch.load(first.run_dir / "last" / "state.pt", weights_only=False)["step"] == 2


def test_resume_needs_a_saved_run(tmp_path, synth):
    with pytest.raises(ValueError, match="no last/"):
        fit(_cfg(synth, tmp_path, "none"), resume=tmp_path / "missing")
