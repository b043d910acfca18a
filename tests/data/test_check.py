import csv
import json

import numpy as np

from echoseg.cli import main
from training.data.check import check_dataset, format_report

from .conftest import SYNTH_VIDEOS


def _read(path):
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def _write(path, header, rows):
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([header, *rows])


def test_clean_synthetic_set_agrees_with_true_masks(synth_root, capsys):
    report = check_dataset(synth_root)
    assert report["ok"] and report["layout"] == "echonet" and not report["problems"]
    assert sum(report["counts"].values()) == SYNTH_VIDEOS
    for video in report["videos"]:
        true = np.load(synth_root / "Masks" / f"{video['name']}.npy")
        areas = {f: int(true[f].sum()) for f in video["traced_frames"]}
        assert video["ed"] == max(areas, key=areas.get)
        assert video["es"] == min(areas, key=areas.get)
        assert abs(video["ed_area"] - areas[video["ed"]]) <= 0.08 * areas[video["ed"]]
        assert abs(video["es_area"] - areas[video["es"]]) <= 0.08 * areas[video["es"]]
        assert video["true"]["agrees"] and min(video["true"]["dice"].values()) >= 0.95
    assert main(["data", "check", str(synth_root), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["videos"] == report["videos"]
    table = format_report(report)
    assert report["videos"][0]["name"] in table and table.rstrip().endswith("OK")


def test_planted_faults_are_each_named(synth_copy, capsys):
    root = synth_copy
    names = [r[0] for r in _read(root / "FileList.csv")[1]]
    (root / "Videos" / f"{names[0]}.avi").unlink()
    (root / "Videos" / f"{names[1]}.avi").write_bytes(b"\xff\xd8 not really a video" * 100)
    header, rows = _read(root / "VolumeTracings.csv")
    frame_col, x2_col = header.index("Frame"), header.index("X2")
    out_of_range = next(i for i, r in enumerate(rows) if r[0] == f"{names[2]}.avi")
    traced = rows[out_of_range][frame_col]
    for r in rows:
        if r[0] == f"{names[2]}.avi" and r[frame_col] == traced:
            r[frame_col] = "500"
    outside = next(i for i, r in enumerate(rows) if r[0] == f"{names[3]}.avi") + 5
    rows[outside][x2_col] = "300.0"
    rows.append(["0XDEADBEEF.avi", "1", "1", "2", "2", "0"])
    _write(root / "VolumeTracings.csv", header, rows)

    report = check_dataset(root)
    assert not report["ok"]
    by_kind = {}
    for p in report["problems"]:
        by_kind.setdefault(p["kind"], []).append(p)
    assert by_kind["missing"][0]["file"] == f"Videos/{names[0]}.avi" and by_kind["missing"][0]["line"] == 2
    assert by_kind["corrupt"][0]["file"] == f"Videos/{names[1]}.avi" and by_kind["corrupt"][0]["line"] == 3
    assert by_kind["range"][0]["line"] == out_of_range + 2 and names[2] in by_kind["range"][0]["message"]
    assert "500" in by_kind["range"][0]["message"]
    assert by_kind["outside"][0]["line"] == outside + 2 and names[3] in by_kind["outside"][0]["message"]
    assert by_kind["unknown"][0]["line"] == len(rows) + 1 and "0XDEADBEEF" in by_kind["unknown"][0]["message"]
    statuses = {v["name"]: v["status"] for v in report["videos"]}
    assert statuses[names[0]] == "missing" and statuses[names[1]] == "corrupt"
    assert statuses[names[4]] == "ok"

    assert main(["data", "check", str(root)]) == 1
    table = capsys.readouterr().out
    assert "FAILED" in table and f"Videos/{names[1]}.avi" in table and "0XDEADBEEF" in table


def test_bad_header_is_named(synth_copy):
    header, rows = _read(synth_copy / "FileList.csv")
    header[header.index("Split")] = "Fold"
    _write(synth_copy / "FileList.csv", header, rows)
    report = check_dataset(synth_copy)
    assert not report["ok"]
    (problem,) = [p for p in report["problems"] if p["kind"] == "header"]
    assert problem["file"] == "FileList.csv" and problem["line"] == 1 and "'Split'" in problem["message"]


def test_unknown_layout_and_missing_folder(tmp_path):
    assert check_dataset(tmp_path / "nowhere")["problems"][0]["kind"] == "missing"
    report = check_dataset(tmp_path)
    assert report["layout"] == "unknown" and not report["ok"]
