"""Outputs that fit together: predict takes what ultralytics' predict takes, detect's detections.json is scored
by eval as written, eval names its reference row, and passed-through errors are one line."""
import json
import shutil

import cv2
import numpy as np
import pytest

from spikedet import SpikedetError, SpikingYOLO
from spikedet.cli import main


def _boxes(results):
    return [(r.key, [(d.label, round(d.score, 6), tuple(np.round(d.box, 3))) for d in r.detections]) for r in results]


def test_predict_takes_arrays_pil_images_and_lists_as_paths(trained, tmp_path):
    from PIL import Image

    data, weights, _ = trained
    model = SpikingYOLO(weights)
    jpg = sorted((data["voc"] / "JPEGImages").glob("*.jpg"))[:2]
    pngs = []
    for p in jpg:  # lossless, so every reader sees the same pixels
        pngs.append(tmp_path / f"{p.stem}.png")
        cv2.imwrite(str(pngs[-1]), cv2.imread(str(p)))
    options = dict(imgsz=64, conf=0.0, progress=False)
    by_path = [model.predict(p, **options)[0] for p in pngs]
    assert any(r.detections for r in by_path) and by_path[0].names == model.names
    assert len(by_path[0].boxes.xyxy) == len(by_path[0].detections)  # ultralytics' Results interface
    from_list = model.predict([str(p) for p in pngs], **options)
    assert _boxes(from_list) == _boxes(by_path)
    assert _boxes(model.predict(tmp_path / "*.png", **options)) == _boxes(by_path)
    array = model.predict(cv2.imread(str(pngs[0])), **options)
    pil = model.predict(Image.open(pngs[0]), **options)
    mixed = model.predict([Image.open(pngs[1]), cv2.imread(str(pngs[0]))], **options)
    assert [r.key for r in array + pil + mixed] == ["image0", "image0", "image0", "image1"]
    assert _boxes(array)[0][1] == _boxes(pil)[0][1] == _boxes(by_path)[0][1] == _boxes(mixed)[1][1]
    assert _boxes(mixed)[0][1] == _boxes(by_path)[1][1]
    for bad, message in ((np.zeros((4, 4, 4), np.uint8), "shape"), (np.zeros((4, 4, 3)), "uint8"),
                         ([], "empty list"), ([3], "expected a path")):
        with pytest.raises(SpikedetError, match=message) as e:
            model.predict(bad, **options)
        assert len(str(e.value)) < 200


def test_detect_output_scores_as_eval_scores_the_network(trained, tmp_path, capsys):
    """detect --gt-coco writes detections.json that eval --detections scores as written, to the same mAP as
    eval --weights on the same images with the same settings."""
    data, weights, _ = trained
    gt = data["coco"]["test"]
    images = gt.parent.parent / "test"
    same = ["--imgsz", "64", "--conf", "0.001", "--iou", "0.7"]
    assert main(["detect", "--source", str(images), "--weights", str(weights), "--gt-coco", str(gt),
                 "--project", str(tmp_path / "runs"), *same]) == 0
    out = capsys.readouterr().out
    assert "ran: dual-error ANN (L = 4)" in out.splitlines()
    dets = tmp_path / "runs" / "exp" / "detections.json"
    ids = {i["file_name"]: i["id"] for i in json.loads(gt.read_text())["images"]}
    entries = json.loads(dets.read_text())
    assert entries and {e["image_id"] for e in entries} <= set(ids.values())
    assert main(["eval", "--gt-coco", str(gt), "--detections", str(dets), "--json", str(tmp_path / "d.json")]) == 0
    assert main(["eval", "--gt-coco", str(gt), "--weights", str(weights), *same,
                 "--json", str(tmp_path / "w.json")]) == 0
    from_detect = json.loads((tmp_path / "d.json").read_text())["coco"]
    from_eval = json.loads((tmp_path / "w.json").read_text())["ann"]["coco"]
    assert from_detect == pytest.approx(from_eval, abs=1e-12)


def test_eval_names_its_reference_and_records_the_run(trained, tmp_path, capsys):
    data, weights, root = trained
    snn = tmp_path / "net.snn.pt"
    assert main(["convert", "--weights", str(weights), "--output", str(snn), "--imgsz", "64"]) == 0
    import torch

    stored = torch.load(snn, weights_only=True)["ann"]["state_dict"]  # the source ANN: float16, as it was given
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    capsys.readouterr()
    out = tmp_path / "sweep.json"
    assert main(["eval", "--weights", str(snn), "--gt-coco", str(data["coco"]["test"]), "--timesteps", "2", "4",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"ANN row: dual-error ANN (L = 4), the SNN's source, stored in {snn}" in printed
    assert "SNN share of the ANN row's mAP50" in printed
    results = json.loads(out.read_text())
    import hashlib

    assert results["reference"]["sha256"] == hashlib.sha256(snn.read_bytes()).hexdigest()
    run = results["run"]
    assert run["images"] == 4 and run["ground_truth"] == str(data["coco"]["test"])
    assert run["settings"]["imgsz"] == 64 and run["versions"]["spikedet"]
    assert set(results["t_for_share"]) == {"metric", "95%", "99%"}
    # another network as the reference row: here the ANN checkpoint itself, named as given
    scored = SpikingYOLO(snn).val(gt_coco=data["coco"]["test"], timesteps=[4], reference=weights, progress=False,
                                  verbose=False)
    assert scored["reference"]["role"] == "reference" and scored["reference"]["file"] == str(weights)
    assert scored["ann"] == results["ann"]
    capsys.readouterr()
    assert main(["eval", "--weights", str(weights), "--gt-coco", str(data["coco"]["test"]), "--imgsz", "64"]) == 0
    assert "alone (no SNN: give --timesteps" in capsys.readouterr().out


def test_a_network_without_learned_thresholds_says_how_to_run_as_an_snn(trained, tmp_path, capsys):
    data, weights, _ = trained
    relu = SpikingYOLO("yolov3-tiny", scale="n", dual_error={"levels": 4, "clip": False, "quantize": False})
    image = next((data["voc"] / "JPEGImages").glob("*.jpg"))
    with pytest.raises(SpikedetError, match="has no learned thresholds.*calibration.*spikedet convert"):
        relu.predict(image, timesteps=4, imgsz=64, progress=False)
    results = relu.predict(image, timesteps=4, imgsz=64, calibration=data["yolo"], progress=False)
    assert results[0].timesteps == 4


def test_a_typo_in_an_ultralytics_option_is_one_line(trained, tmp_path, capsys):
    data, _, _ = trained
    assert main(["train", "--data", str(data["yolo"]), "--project", str(tmp_path), "lr00=0.1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: lr00=0.1: not an ultralytics train argument (did you mean lr0?)"]
    assert main(["train", "--data", str(data["yolo"]), "--project", str(tmp_path), "lr0=fast"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lr0" in err[0]
    assert not list(tmp_path.iterdir())  # no run folder left behind


def test_a_partial_voc_tree_names_the_image_sets_it_can_score(trained, tmp_path):
    from spikedet.data.voc import read_voc

    data = trained[0]
    voc = tmp_path / "VOC"
    shutil.copytree(data["voc"], voc)
    main_sets = voc / "ImageSets" / "Main"
    (main_sets / "test.txt").write_text((main_sets / "test.txt").read_text() + "999999\n")
    with pytest.raises(SpikedetError, match=r"999999\.xml: not found: image set 'test' lists 5 images, 1 of them "
                                            r"without an annotation here; image sets with every annotation here: "):
        read_voc(voc, "test")
