"""tools/detect.py: outputs keyed by relative path, warnings for bad files, run folders that never overwrite."""
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from spikedet import SpikedetError, SpikingYOLO
from spikedet.cli import main
from spikedet.runs import next_run_folder
from spikedet.sources import list_sources

SHIPPED = Path(__file__).resolve().parents[1] / "weights" / "shapes-yolov3-tiny-n-de-v2.pt"


@pytest.fixture
def mixed_folder(trained, tmp_path):
    """A good JPEG, the same picture as PNG under the same stem, a corrupt, a truncated JPEG and a text file."""
    data, _, _ = trained
    folder = tmp_path / "inputs"
    folder.mkdir()
    good = next((data["voc"] / "JPEGImages").glob("*.jpg"))
    shutil.copyfile(good, folder / "good.jpg")
    cv2.imwrite(str(folder / "good.png"), cv2.imread(str(good)))
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    (folder / "cut.jpg").write_bytes(good.read_bytes()[:-200])
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.mark.parametrize("kind", ["ann", "snn"])
def test_detect_writes_outputs_and_skips_bad_files(trained, mixed_folder, tmp_path, capsys, kind):
    _, weights, _ = trained
    if kind == "snn":
        snn = tmp_path / "net.snn.pt"
        assert main(["convert", "--weights", str(weights), "--output", str(snn), "--imgsz", "64"]) == 0
        weights = snn
    extra = ["--save-rates"] if kind == "snn" else []
    assert main(["detect", "--source", str(mixed_folder), "--weights", str(weights), "--imgsz", "64",
                 "--conf", "0.0", "--project", str(tmp_path / "runs"), "--save-txt", *extra]) == 0
    out = capsys.readouterr().out
    assert "2 images" in out and "3 files skipped" in out
    assert "corrupt.jpg: not a readable image" in out and "notes.txt: unsupported file type" in out
    assert "cut.jpg: truncated JPEG" in out
    run = tmp_path / "runs" / "exp"
    for name in ("good.jpg", "good.png"):  # one stem, two inputs: two outputs, neither overwrites the other
        annotated = cv2.imread(str(run / name))
        assert annotated is not None and annotated.shape[:2] == (64, 64)
        assert (run / name).stat().st_mode & 0o777 == 0o666 & ~_umask()
    detections = json.loads((run / "detections.json").read_text())
    assert {d["image_id"] for d in detections} == {"good.jpg", "good.png"}
    per_image = {key: [d for d in detections if d["image_id"] == key] for key in ("good.jpg", "good.png")}
    assert len(per_image["good.jpg"]) > 0  # conf 0: every surviving box is reported
    assert all(set(d) == {"image_id", "category_id", "category_name", "bbox", "score"} for d in detections)
    for key, label in (("good.jpg", "good.txt"), ("good.png", "good.png.txt")):  # ultralytics' name, unless taken
        lines = (run / "labels" / label).read_text().splitlines()
        assert len(lines) == len(per_image[key]) and all(len(line.split()) == 6 for line in lines)
    if kind == "snn":
        rates = json.loads((run / "firing_rates.json").read_text())
        assert rates[0]["image"] == "good.jpg" and rates[0]["timesteps"] == 4  # the L it was trained for
        assert any(r.get("firing_rate", 0) > 0 for r in rates[0]["layers"])


def _umask():
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_video_frames_are_keyed_under_the_video(trained, tmp_path):
    _, weights, _ = trained
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 64))
    for k in range(3):
        writer.write(np.full((64, 64, 3), 40 * k, np.uint8))
    writer.release()
    summary = SpikingYOLO(weights).predict(video, imgsz=64, save=True, project=tmp_path / "runs", progress=False,
                                           save_txt=True)
    assert summary.images == 3 and not summary.skipped
    assert sorted(p.name for p in summary.output.iterdir()) == ["clip.avi", "detections.json", "labels"]
    annotated = cv2.VideoCapture(str(summary.output / "clip.avi"))
    assert annotated.get(cv2.CAP_PROP_FRAME_COUNT) == 3 and annotated.get(cv2.CAP_PROP_FRAME_WIDTH) == 64
    assert sorted(p.name for p in (summary.output / "labels").iterdir()) == [f"clip_{k}.txt" for k in range(3)]


def test_run_folders_never_overwrite(tmp_path):
    folders = [next_run_folder(tmp_path, "exp") for _ in range(3)]
    assert [f.name for f in folders] == ["exp", "exp2", "exp3"]
    (folders[1] / "keep.txt").write_text("earlier run")
    assert next_run_folder(tmp_path, "exp").name == "exp4"
    assert (folders[1] / "keep.txt").read_text() == "earlier run"


def test_a_refused_run_leaves_no_folder(trained, tmp_path, capsys):
    _, weights, _ = trained
    assert main(["detect", "--source", str(tmp_path / "missing"), "--weights", str(weights),
                 "--project", str(tmp_path / "runs")]) == 2
    assert "no such file, folder or glob match" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_sources_glob_and_missing(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.jpg", "b.png", "c.txt", "sub/d.jpg"):
        (tmp_path / name).write_bytes(b"x")
    paths, root = list_sources(tmp_path / "**" / "*.jpg")
    assert [p.relative_to(root).as_posix() for p in paths] == ["a.jpg", "sub/d.jpg"]
    paths, root = list_sources(tmp_path)
    assert root == tmp_path and [p.name for p in paths] == ["a.jpg", "b.png", "c.txt"]
    with pytest.raises(SpikedetError, match="no such file"):
        list_sources(tmp_path / "missing")


def test_shipped_weights_find_the_shapes(trained, tmp_path):
    """The committed checkpoint loads as the documented network, converts, and finds the objects of a shapes
    image at T = 16: every confident detection overlaps a ground-truth object of its class."""
    from torchvision.ops import box_iou
    import torch

    model = SpikingYOLO(SHIPPED)
    assert model.names == {0: "circle", 1: "square", 2: "triangle"}
    assert model.network.yaml["dual_error"]["levels"] == 16 and model.network.yaml["scale"] == "n"
    snn = model.convert(output=tmp_path / "shapes.snn.pt", imgsz=192)
    data = trained[0]
    from spikedet.data.voc import read_voc
    records = read_voc(data["voc"], "test", ("circle", "square", "triangle"))
    hits = total = 0
    for record in records[:4]:
        result, = snn.predict(record.path, timesteps=16, conf=0.5)
        dets = result.detections
        for d in dets:
            same = record.labels == d.label
            total += 1
            if same.any():
                iou = box_iou(torch.tensor(d.box[None]), torch.tensor(record.boxes[same] - [1, 1, 0, 0]))
                hits += bool(iou.max() > 0.5)
    assert total > 0 and hits / total > 0.8
