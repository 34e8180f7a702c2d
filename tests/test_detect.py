"""tools/detect.py: outputs, warnings for bad files, run folders that never overwrite."""
import json
import shutil

import cv2
import numpy as np
import pytest

from spikedet import SpikedetError
from spikedet.cli import main
from spikedet.detect import detect, list_sources, next_run_folder


@pytest.fixture
def mixed_folder(trained, tmp_path):
    data, _, _ = trained
    folder = tmp_path / "inputs"
    folder.mkdir()
    shutil.copyfile(next((data["voc"] / "JPEGImages").glob("*.jpg")), folder / "good.jpg")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.mark.parametrize("kind", ["ann", "snn"])
def test_detect_writes_outputs_and_skips_bad_files(trained, mixed_folder, tmp_path, capsys, kind):
    _, weights, root = trained
    if kind == "snn":
        snn = tmp_path / "net.snn.pt"
        assert main(["convert", "--weights", str(weights), "--output", str(snn), "--imgsz", "64"]) == 0
        weights = snn
    extra = ["--save-rates"] if kind == "snn" else []
    assert main(["detect", "--source", str(mixed_folder), "--weights", str(weights), "--imgsz", "64",
                 "--conf", "0.0", "--project", str(tmp_path / "runs"), "--save-txt", *extra]) == 0
    out = capsys.readouterr().out
    assert "1 images" in out and "2 files skipped" in out
    assert "corrupt.jpg: not a readable image" in out and "notes.txt: unsupported file type" in out
    run = tmp_path / "runs" / "exp"
    annotated = cv2.imread(str(run / "good.jpg"))
    assert annotated is not None and annotated.shape[:2] == (64, 64)
    detections = json.loads((run / "detections.json").read_text())
    assert detections and {d["image_id"] for d in detections} == {"good"}
    assert all(set(d) == {"image_id", "category_id", "category_name", "bbox", "score"} for d in detections)
    lines = (run / "labels" / "good.txt").read_text().splitlines()
    assert len(lines) == len(detections) and all(len(line.split()) == 6 for line in lines)
    if kind == "snn":
        rates = json.loads((run / "firing_rates.json").read_text())
        assert rates[0]["image"] == "good" and rates[0]["timesteps"] == 4  # the L it was trained for
        assert any(r.get("firing_rate", 0) > 0 for r in rates[0]["layers"])


def test_video_frames_are_detected(trained, tmp_path):
    _, weights, _ = trained
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 64))
    for k in range(3):
        writer.write(np.full((64, 64, 3), 40 * k, np.uint8))
    writer.release()
    summary = detect(video, weights, imgsz=64, project=tmp_path / "runs", progress=False)
    assert summary.images == 3 and not summary.skipped
    assert sorted(p.name for p in summary.output.glob("*.jpg")) == [f"clip_{k:06d}.jpg" for k in range(3)]


def test_run_folders_never_overwrite(tmp_path):
    folders = [next_run_folder(tmp_path, "exp") for _ in range(3)]
    assert [f.name for f in folders] == ["exp", "exp2", "exp3"]
    (folders[1] / "keep.txt").write_text("earlier run")
    assert next_run_folder(tmp_path, "exp").name == "exp4"
    assert (folders[1] / "keep.txt").read_text() == "earlier run"


def test_sources_glob_and_missing(tmp_path):
    for name in ("a.jpg", "b.png", "c.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_sources(tmp_path / "*.jpg")] == ["a.jpg"]
    assert [p.name for p in list_sources(tmp_path)] == ["a.jpg", "b.png", "c.txt"]
    with pytest.raises(SpikedetError, match="no such file"):
        list_sources(tmp_path / "missing")


def test_shipped_weights_detect_shapes(trained, tmp_path):
    """The committed checkpoint loads as the documented network and runs through convert and detect."""
    from pathlib import Path

    from spikedet.train import load_ann_checkpoint

    weights = Path(__file__).resolve().parents[1] / "weights" / "shapes-yolov3-tiny-n-de-v1.pt"
    model = load_ann_checkpoint(weights)
    assert model.names == {0: "circle", 1: "square", 2: "triangle"}
    assert model.yaml["dual_error"]["levels"] == 16 and model.yaml["scale"] == "n"
    snn = tmp_path / "shapes.snn.pt"
    assert main(["convert", "--weights", str(weights), "--output", str(snn), "--imgsz", "192"]) == 0
    image = next((trained[0]["voc"] / "JPEGImages").glob("*.jpg"))
    summary = detect(image, snn, project=tmp_path / "runs", progress=False)
    assert summary.images == 1 and not summary.skipped
