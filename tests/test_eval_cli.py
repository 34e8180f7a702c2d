"""`spikedet eval` / tools/eval_map.py: the JSON contract, the table, and one-line errors with exit code 2."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from spikedet.cli import main
from spikedet.data.records import VOC_CLASSES
from spikedet.eval import COCO_METRICS

REPO = Path(__file__).resolve().parents[1]


def write_json(path, obj):
    path.write_text(json.dumps(obj))
    return path


@pytest.fixture
def coco_case(tmp_path):
    gt = {
        "images": [{"id": 1, "width": 200, "height": 200}, {"id": 2, "width": 200, "height": 200}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "area": 2500, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 2, "bbox": [20, 30, 90, 80], "area": 7200, "iscrowd": 0},
        ],
    }
    detections = [{"image_id": 1, "category_id": 1, "bbox": [12, 10, 50, 48], "score": 0.9},
                  {"image_id": 2, "category_id": 1, "bbox": [0, 0, 30, 30], "score": 0.8}]
    return write_json(tmp_path / "instances.json", gt), write_json(tmp_path / "dets.json", detections)


@pytest.fixture
def voc_case(tmp_path):
    """A two-image VOC tree (a dog in one, a difficult and a plain person in the other) and detections."""
    root = tmp_path / "VOC2007"
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    objects = {"000001": [("dog", 0, (48, 240, 195, 371))],
               "000002": [("person", 1, (8, 12, 352, 498)), ("person", 0, (100, 100, 200, 300))]}
    for stem, objs in objects.items():
        xml = "".join(f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>"
                      f"<xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax>"
                      "</bndbox></object>" for name, difficult, (x1, y1, x2, y2) in objs)
        (root / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><size><width>500</width><height>500</height></size>{xml}</annotation>")
    (root / "ImageSets" / "Main" / "test.txt").write_text("000001\n000002\n")
    dog, person = VOC_CLASSES.index("dog") + 1, VOC_CLASSES.index("person") + 1
    detections = [{"image_id": "000001", "category_id": dog, "bbox": [50, 240, 140, 130], "score": 0.7},
                  {"image_id": "000002", "category_id": person, "bbox": [300, 300, 50, 50], "score": 0.9},
                  {"image_id": "000002", "category_id": person, "bbox": [100, 100, 100, 200], "score": 0.6}]
    return root, write_json(tmp_path / "dets.json", detections)


def is_fraction_or_none(value):
    return value is None or 0.0 <= value <= 1.0


def test_coco_writes_the_twelve_metrics(coco_case, tmp_path, capsys):
    gt, dets = coco_case
    out = tmp_path / "out" / "coco.json"
    assert main(["eval", "--detections", str(dets), "--gt-coco", str(gt), "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert list(results) == ["coco"] and list(results["coco"]) == list(COCO_METRICS)
    assert all(is_fraction_or_none(v) for v in results["coco"].values())
    assert 0.0 < results["coco"]["AP50"] < 1.0  # one hit, one miss
    table = capsys.readouterr().out
    assert all(name in table for name in COCO_METRICS)


def test_voc_writes_both_metrics_per_class(voc_case, tmp_path, capsys):
    root, dets = voc_case
    out = tmp_path / "voc.json"
    assert main(["eval", "--detections", str(dets), "--gt-voc", str(root), "--split", "test",
                 "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert list(results) == ["voc07", "voc10"]
    for metric in results.values():
        assert set(metric) == {"mAP", "per_class"} and list(metric["per_class"]) == list(VOC_CLASSES)
        assert all(is_fraction_or_none(v) for v in [metric["mAP"], *metric["per_class"].values()])
        assert metric["per_class"]["dog"] == 1.0 and metric["per_class"]["cat"] is None
        assert metric["per_class"]["person"] == pytest.approx(0.5)  # FP first, then the one non-difficult TP
    table = capsys.readouterr().out
    assert "person" in table and "mAP" in table


def test_class_names_from_dataset_yaml(voc_case, tmp_path):
    root, _ = voc_case
    (tmp_path / "data.yaml").write_text("names: [person, dog]\n")
    dets = write_json(tmp_path / "mine.json",
                      [{"image_id": "000001", "category_id": 2, "bbox": [48, 240, 147, 131], "score": 0.5}])
    out = tmp_path / "voc.json"
    assert main(["eval", "--detections", str(dets), "--gt-voc", str(root),
                 "--data", str(tmp_path / "data.yaml"), "--json", str(out)]) == 0
    per_class = json.loads(out.read_text())["voc10"]["per_class"]
    assert per_class == {"person": 0.0, "dog": 1.0}


@pytest.mark.parametrize("content", ["{not json", '[{"image_id": "000001", "bbox": [1, 2]}]'])
def test_malformed_detections_exit_2_with_one_line(voc_case, tmp_path, capsys, content):
    root, _ = voc_case
    bad = tmp_path / "bad_dets.json"
    bad.write_text(content)
    out = tmp_path / "o.json"
    assert main(["eval", "--detections", str(bad), "--gt-voc", str(root), "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err and "Traceback" not in err
    assert not out.exists()


def test_verbose_shows_pycocotools_output(coco_case, capsys):
    gt, dets = coco_case
    assert main(["eval", "--detections", str(dets), "--gt-coco", str(gt), "--verbose"]) == 0
    assert "Average Precision" in capsys.readouterr().out
    assert main(["eval", "--detections", str(dets), "--gt-coco", str(gt)]) == 0
    assert "Average Precision" not in capsys.readouterr().out
    assert main(["eval", "--weights", str(dets), "--gt-coco", str(gt), "--verbose"]) == 2  # a network: nothing to show
    err = capsys.readouterr().err
    assert "--verbose shows pycocotools' output" in err and "Traceback" not in err


def test_verbose_is_refused_for_voc(voc_case, capsys):
    root, dets = voc_case
    assert main(["eval", "--detections", str(dets), "--gt-voc", str(root), "--verbose"]) == 2
    assert "--verbose shows pycocotools' output" in capsys.readouterr().err


def test_data_with_coco_ground_truth_is_refused(coco_case, tmp_path, capsys):
    gt, dets = coco_case
    assert main(["eval", "--detections", str(dets), "--gt-coco", str(gt), "--data", "data.yaml"]) == 2
    assert "--data" in capsys.readouterr().err


def test_exactly_one_ground_truth(coco_case, voc_case):
    gt, dets = coco_case
    assert main(["eval", "--detections", str(dets), "--gt-coco", str(gt), "--gt-voc", str(voc_case[0])]) == 2


def test_tool_script_runs_from_any_directory(voc_case, tmp_path):
    root, dets = voc_case
    out = tmp_path / "voc.json"
    command = [sys.executable, str(REPO / "tools" / "eval_map.py"),
               "--detections", str(dets), "--gt-voc", str(root), "--json", str(out)]
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert json.loads(out.read_text())["voc07"]["per_class"]["dog"] == 1.0


def test_coco_named_classes_score_on_voc_under_voc_names():
    from spikedet.validate import GroundTruth

    coco_names = {0: "person", 1: "airplane", 2: "couch", 3: "tv", 4: "giraffe", 5: "potted plant"}
    mapping = GroundTruth([], list(VOC_CLASSES), "voc").label_map(coco_names)
    assert {coco_names[k]: VOC_CLASSES[v] for k, v in mapping.items()} == {
        "person": "person", "airplane": "aeroplane", "couch": "sofa", "tv": "tvmonitor",
        "potted plant": "pottedplant"}  # giraffe is no VOC class: left out


def test_t_for_share_gives_the_first_t_and_the_t_it_stays_from():
    from spikedet.eval.report import format_t_for_share, t_for_share

    def coco(ap50):
        return {"coco": {"AP50": ap50, "AP": ap50 / 2}}

    results = {"ann": coco(0.50), "snn": {4: coco(0.30), 8: coco(0.48), 16: coco(0.499), 32: coco(0.47),
                                          64: coco(0.496)}}
    # 95%: 0.475 -- T=8 reaches it first, but T=32 falls below again, so it holds at every larger T from 64
    found = t_for_share(results)
    assert found == {"metric": "mAP50", "95%": {"first": 8, "stable_from": 64},
                     "99%": {"first": 16, "stable_from": 64}}
    assert "first at T = 8, from T = 64 on" in format_t_for_share(found)
    results["snn"][64] = coco(0.2)
    found = t_for_share(results)
    assert found["95%"] == {"first": 8, "stable_from": None} and "not at every larger" in format_t_for_share(found)
    results["snn"] = {4: coco(0.1)}
    assert t_for_share(results)["99%"] == {"first": None, "stable_from": None}
