"""The ablation report: ranking against the paper, paired differences, markdown tables."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_ablation():
    """benchmarks/ is a folder of scripts, not an installed package: load the module by path."""
    spec = importlib.util.spec_from_file_location("benchmarks_ablation", ROOT / "benchmarks" / "ablation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


ablation = _load_ablation()


def fake_row(key: str, dice: float, hd: float, auc: float) -> dict:
    row = next(r for r in ablation.ROWS if r.key == key)
    metrics = {
        "traced": {
            "n_frames": 4,
            "dice": {"mean": dice, "std": 0.01, "n_undefined": 0},
            "hd": {"mean": hd, "std": 0.5, "n_undefined": 0},
            "hd95": {"mean": hd * 0.8, "std": 0.4, "n_undefined": 0},
            "auc": {"mean": auc, "std": 0.01, "n_undefined": 0},
        },
        "all_frames": None,
        "ef": {"predicted": {"corr": 0.5, "bias": 1.0, "std": 2.0, "n": 2, "n_undefined": 0}},
    }
    return ablation.row_summary(row, metrics, train_seconds=1.0, params=100)


def test_ranking_flags_exactly_the_pairs_ordered_unlike_the_paper():
    rows = [
        fake_row("unet", 0.80, 5.0, 0.90),
        fake_row("baseline", 0.82, 4.0, 0.91),
        fake_row("tce", 0.85, 3.0, 0.93),
        fake_row("bssf", 0.84, 3.5, 0.92),
        fake_row("full", 0.83, 2.0, 0.94),  # Dice below TCE and BSSF, unlike the paper
    ]
    dice = {r["key"]: [r["dice_pct"]["mean"] / 100.0] * 4 for r in rows}
    dice["full"] = [0.82, 0.83, 0.84, 0.83]
    report = ablation.ranking_report(rows, dice)

    flagged = {(p["paper_better"], p["paper_worse"]) for p in report["dice_pct"]["pairs_disagreeing"]}
    assert flagged == {("full", "tce"), ("full", "bssf")}
    assert report["dice_pct"]["pairs_agreeing"] == 8
    assert report["dice_pct"]["our_order"] == ["tce", "bssf", "full", "baseline", "unet"]
    # Lower HD is better: the fake HD follows the paper except BSSF vs TCE (paper: BSSF lower).
    hd_flagged = {(p["paper_better"], p["paper_worse"]) for p in report["hd_px"]["pairs_disagreeing"]}
    assert hd_flagged == {("bssf", "tce")}
    assert report["auc_pct"]["pairs_disagreeing"] == []


def test_paired_difference_and_its_interval():
    diff, half = ablation.paired_difference([0.9, 0.8, 0.7, 0.6], [0.8, 0.7, 0.6, 0.5])
    assert diff == pytest.approx(0.1)
    assert half == pytest.approx(0.0, abs=1e-12)
    diff, half = ablation.paired_difference([1.0, 0.0], [0.0, 1.0])
    assert diff == pytest.approx(0.0) and half > 0.5


def test_markdown_holds_both_tables_and_the_paper_figures():
    rows = [fake_row(r.key, 0.8, 3.0, 0.9) for r in ablation.ROWS]
    report = {
        "command": "python -m benchmarks.ablation",
        "budget": {**ablation.asdict(ablation.FULL)},
        "machine": {"cpus": 2, "torch": "x"},
        "rows": rows,
        "timing": {
            "1": {"ms_per_frame": 1.0, "ratio_to_k1": 1.0, "params": 10},
            "3": {"ms_per_frame": 3.0, "ratio_to_k1": 3.0, "params": 30},
            "5": {"ms_per_frame": 5.0, "ratio_to_k1": 5.0, "params": 50},
        },
        "ranking": ablation.ranking_report(rows, {r["key"]: [0.8] * 4 for r in rows}),
    }
    md = ablation.markdown(report)
    assert "## Table 2" in md and "## Table 5" in md
    assert "| 92.87 |" in md  # the paper's full-model Dice
    assert "| Baseline+TCE | 80.00 ± 1.00 |" in md
    assert md.count("\n| 1 | baseline |") == 1 and "| 2.67 |" in md  # paper's 32/12 ms ratio
    for row in ablation.ROWS:
        assert row.how in md


def test_combining_seed_runs_gives_mean_and_std_per_row():
    def report(seed, full_dice):
        rows = [fake_row("tce", 0.80, 3.0, 0.9), fake_row("full", full_dice, 2.0, 0.95)]
        return {"budget": {"seed": seed}, "rows": rows}

    combined = ablation.combine_seeds([report(0, 0.60), report(1, 0.90), report(2, 0.75)])
    assert combined["seeds"] == [0, 1, 2]
    full = next(r for r in combined["rows"] if r["key"] == "full")
    assert full["dice_pct"]["per_seed"] == pytest.approx([60.0, 90.0, 75.0])
    assert full["dice_pct"]["mean"] == pytest.approx(75.0)
    assert full["dice_pct"]["std"] == pytest.approx(15.0)
    rows = combined["rows"]
    report = {
        "command": "python -m benchmarks.ablation",
        "budget": {**ablation.asdict(ablation.FULL)},
        "machine": {"cpus": 2, "torch": "x"},
        "seeds": [0, 1, 2],
        "rows": rows,
        "timing": {"1": {"ms_per_frame": 1.0, "ratio_to_k1": 1.0, "params": 10}},
        "ranking": ablation.seeds_ranking(rows),
        "per_seed_reports": ["ablation_seed0.md"],
    }
    md = ablation.combined_markdown(report)
    assert "| Baseline+TCE+BSSF (full) | 75.00 ± 15.00 | 60.0, 90.0, 75.0 |" in md
    # The paper ranks the full model above TCE; here its seed mean (75) is below TCE (80).
    flagged = report["ranking"]["dice_pct"]["pairs_disagreeing"]
    assert [(p["paper_better"], p["paper_worse"]) for p in flagged] == [("full", "tce")]
    assert flagged[0]["difference"] == pytest.approx(-5.0)
    assert flagged[0]["beyond_seed_spread"] is False  # 5 points < the 15-point seed std


def _seed_report(seed: int, frame_dice: dict[str, list[float]]) -> dict:
    rows = []
    for key, frames in frame_dice.items():
        row = fake_row(key, sum(frames) / len(frames), 2.0, 0.95)
        row["frame_dice"] = frames
        rows.append(row)
    return {"budget": {"seed": seed}, "rows": rows}


def test_paired_tests_judge_the_papers_order_on_the_seed_level_ci():
    from scipy import stats

    # full beats baseline by 2-4 points in every seed; tce vs bssf flips sign between seeds
    table = {  # per seed: (baseline, tce, bssf, full) frame Dice, two frames each
        0: ([0.90, 0.90], [0.93, 0.93], [0.92, 0.92], [0.93, 0.93]),
        1: ([0.89, 0.89], [0.91, 0.91], [0.93, 0.93], [0.93, 0.92]),
        2: ([0.90, 0.90], [0.93, 0.93], [0.91, 0.91], [0.94, 0.94]),
    }
    keys = ("baseline", "tce", "bssf", "full")
    reports = [_seed_report(seed, dict(zip(keys, rows, strict=True))) for seed, rows in table.items()]
    pairs = {(p["a"], p["b"]): p for p in ablation.paired_tests(reports)}
    full = pairs[("baseline", "full")]
    diffs = [-3.0, -3.5, -4.0]  # baseline - full per seed, in points
    assert full["seeds"] == 3 and full["dice_diff_pct"] == pytest.approx(-3.5, abs=1e-6)
    half = stats.t.ppf(0.975, 2) * stats.tstd(diffs) / 3**0.5
    assert full["ci95_pct"] == pytest.approx([-3.5 - half, -3.5 + half], abs=1e-3)
    assert full["p"] == pytest.approx(
        stats.ttest_rel([0.90, 0.89, 0.90], [0.93, 0.925, 0.94]).pvalue, abs=1e-3
    )
    assert (
        full["paper_better"] == "full" and full["paper_order"] == "holds" and full["a_better_in_seeds"] == 0
    )
    assert pairs[("tce", "bssf")]["paper_order"] == "undecided"  # +1, -2, +2 points: CI spans 0
    text = "\n".join(ablation.paired_lines(list(pairs.values())))
    assert "| baseline | full | -3.50 |" in text and "full > baseline" in text


def test_combining_per_seed_files_links_them_in_the_seeds_folder(tmp_path):
    """Per-seed reports live in ``<out>/seeds/``; the table over seeds links them from ``<out>``."""
    import json

    seeds = tmp_path / ablation.SEEDS
    seeds.mkdir()
    paths = []
    for seed in (0, 1):
        report = _seed_report(seed, {"baseline": [0.90, 0.91], "full": [0.93, 0.92 + seed / 100]})
        report["budget"] = {**ablation.asdict(ablation.FULL), "seed": seed}
        report["command"] = f"python -m benchmarks.ablation --seeds {seed}"
        path = seeds / f"ablation_seed{seed}.json"
        path.write_text(json.dumps(report))
        (seeds / f"ablation_seed{seed}.md").write_text("per-seed table\n")
        paths.append(str(path))
    assert ablation.main(["--combine", *paths, "--out", str(tmp_path), "--name", "ablation"]) == 0
    combined = json.loads((tmp_path / "ablation.json").read_text())
    assert combined["per_seed_reports"] == ["seeds/ablation_seed0.md", "seeds/ablation_seed1.md"]
    assert "[seeds/ablation_seed0.md](seeds/ablation_seed0.md)" in (tmp_path / "ablation.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ablation.json", "ablation.md", "seeds"]
