"""train -> convert -> eval through the CLI, on a tiny embedded dataset."""
import json

from spikedet.cli import main
from spikedet.data.coco import read_coco
from spikedet.predict import load_network
from spikedet.validate import detect_records


def test_snn_at_t_equals_l_scores_exactly_as_its_ann(trained):
    data, weights, root = trained
    snn = root / "net.snn.pt"
    assert main(["convert", "--weights", str(weights), "--output", str(snn), "--imgsz", "64"]) == 0
    out = root / "sweep.json"
    plot = root / "sweep.png"
    assert main(["eval", "--weights", str(snn), "--gt-coco", str(data["coco"]["test"]), "--timesteps", "2", "4",
                 "--conf", "0.0", "--json", str(out), "--plot", str(plot)]) == 0
    results = json.loads(out.read_text())
    assert set(results) == {"ann", "snn", "seconds_per_image"} and set(results["snn"]) == {"2", "4"}
    assert set(results["seconds_per_image"]) == {"ann", "snn"}
    assert results["snn"]["4"] == results["ann"]
    assert plot.stat().st_size > 1000

    # The same holds detection by detection (a one-epoch network scores ~0, so compare the detections).
    network, ann = load_network(snn)
    records, _ = read_coco(data["coco"]["test"])
    ann_dets = detect_records(ann, records, 64, conf=0.0, progress=False)[None]
    snn_dets = detect_records(network, records, 64, timesteps=[4], conf=0.0, progress=False)[4]
    assert sum(map(len, ann_dets)) > 0
    for a_image, s_image in zip(ann_dets, snn_dets):
        assert [d.label for d in a_image] == [d.label for d in s_image]
        assert all(abs(a.score - s.score) < 1e-4 and abs(a.box - s.box).max() < 1e-3
                   for a, s in zip(a_image, s_image))


def test_snn_scores_on_the_voc_layout_too(trained):
    data, weights, root = trained
    snn = root / "net-binary.snn.pt"
    assert main(["convert", "--weights", str(weights), "--output", str(snn), "--imgsz", "64",
                 "--spikes", "binary"]) == 0
    out = root / "voc.json"
    assert main(["eval", "--weights", str(snn), "--gt-voc", str(data["voc"]), "--split", "test",
                 "--data", str(data["yolo"]), "--timesteps", "8", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    for metrics in (results["ann"], results["snn"]["8"]):
        assert set(metrics) == {"voc07", "voc10"}
        assert set(metrics["voc07"]["per_class"]) == {"circle", "square", "triangle"}


def test_ann_checkpoint_scores_alone(trained, capsys):
    data, weights, _ = trained
    assert main(["eval", "--weights", str(weights), "--gt-coco", str(data["coco"]["test"]), "--imgsz", "64"]) == 0
    assert "ANN" in capsys.readouterr().out


def test_max_images_runs_and_scores_only_the_first_images(trained, monkeypatch):
    import spikedet.validate as validate

    data, weights, _ = trained
    network, _ = load_network(weights)
    seen = {}
    real_detect, real_coco = validate.detect_records, validate.evaluate_coco
    monkeypatch.setattr(validate, "detect_records", lambda net, records, *a, **k: seen.setdefault(
        "run", [r.image_id for r in records]) and real_detect(net, records, *a, **k))
    monkeypatch.setattr(validate, "evaluate_coco", lambda gt, results, image_ids=None: seen.setdefault(
        "scored", image_ids) and real_coco(gt, results, image_ids=image_ids))
    records, _ = read_coco(data["coco"]["test"])
    first = sorted(r.image_id for r in records)[:2]
    scored = validate.evaluate_network(network, 64, gt_coco=data["coco"]["test"], max_images=2, progress=False)
    assert seen == {"run": first, "scored": first}
    assert set(scored) == {"ann", "seconds_per_image"} and scored["seconds_per_image"]["ann"] > 0
