"""train -> convert -> eval through the CLI and the Python API, on a tiny embedded dataset."""
import json

import pytest
import torch

from spikedet import SpikingYOLO
from spikedet.cli import main
from spikedet.eval import evaluate_voc
from spikedet.fileio import read_json


def test_snn_at_t_equals_l_scores_exactly_as_its_ann(trained):
    data, weights, root = trained
    snn = root / "net.snn.pt"
    assert main(["convert", "--weights", str(weights), "--output", str(snn), "--imgsz", "64"]) == 0
    out, plot = root / "sweep.json", root / "sweep.png"
    assert main(["eval", "--weights", str(snn), "--gt-coco", str(data["coco"]["test"]), "--timesteps", "2", "4",
                 "--conf", "0.0", "--json", str(out), "--plot", str(plot)]) == 0
    results = json.loads(out.read_text())
    assert results["snn"]["4"] == results["ann"]  # burst neurons at T = L compute the dual-error ANN exactly
    assert plot.stat().st_size > 1000

    # The same holds detection by detection (a one-epoch network scores ~0, so compare the detections).
    model = SpikingYOLO(snn)
    image = next(iter(sorted((data["voc"] / "JPEGImages").glob("*.jpg"))))
    ann_dets = SpikingYOLO(weights).predict(image, imgsz=64, conf=0.0, iou=0.7)[0].detections
    snn_dets = model.predict(image, timesteps=4, conf=0.0, iou=0.7)[0].detections
    assert len(ann_dets) > 0 and [d.label for d in ann_dets] == [d.label for d in snn_dets]
    assert all(abs(a.score - s.score) < 1e-4 and abs(a.box - s.box).max() < 1e-3
               for a, s in zip(ann_dets, snn_dets))


def test_plot_draws_several_sweeps_and_refuses_what_it_cannot_draw(trained, tmp_path, capsys):
    data, weights, _ = trained
    sweeps = []
    for T in ("2", "4"):
        sweeps.append(tmp_path / f"sweep{T}.json")
        assert main(["eval", "--weights", str(weights), "--gt-coco", str(data["coco"]["test"]), "--imgsz", "64",
                     "--timesteps", "1", T, "--json", str(sweeps[-1])]) == 0
    png = tmp_path / "both.png"
    assert main(["plot", *map(str, sweeps), "--labels", "to T=2", "to T=4", "--metric", "mAP50_95",
                 "--reference", "0.5", "--output", str(png)]) == 0
    import cv2

    image = cv2.imread(str(png))
    assert image is not None and image.shape[0] > 300 and image.shape[1] > 500
    capsys.readouterr()
    for argv, message, out in ((["--metric", "voc07"], "no metric 'voc07'", tmp_path / "new.png"),
                               (["--labels", "one"], "2 results files", tmp_path / "new.png"),
                               ([], "already exists", png)):
        assert main(["plot", *map(str, sweeps), *argv, "--output", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "new.png").exists()
    not_a_sweep = tmp_path / "list.json"
    not_a_sweep.write_text("[]")
    assert main(["plot", str(not_a_sweep), "--output", str(tmp_path / "x.png")]) == 2
    assert "not an eval sweep" in capsys.readouterr().err


def test_voc_scores_of_a_network_equal_the_devkit_on_its_own_detections(trained, tmp_path):
    """eval --gt-voc on a network == evaluate_voc on the detections it writes (labels mapped by name, boxes
    moved to the devkit's 1-based pixels): the path from network to VOC AP adds nothing of its own."""
    data, weights, root = trained
    snn = root / "net-binary.snn.pt"
    assert main(["convert", "--weights", str(weights), "--output", str(snn), "--imgsz", "64",
                 "--spikes", "binary"]) == 0
    model = SpikingYOLO(snn)
    scored = model.val(gt_voc=data["voc"], split="test", data=data["yolo"], timesteps=[8], progress=False)
    from spikedet.validate import GroundTruth, detect_records

    truth = GroundTruth.read(gt_voc=data["voc"], split="test", voc_class_names=("circle", "square", "triangle"))
    dets = detect_records(model.network, truth, model.stream_settings([8]), progress=False)[8]
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(truth.results(dets, truth.label_map(model.names))))
    direct = evaluate_voc(data["voc"], "test", path, ("circle", "square", "triangle"))
    assert scored["snn"][8]["voc07"] == direct["voc07"] and scored["snn"][8]["voc10"] == direct["voc10"]


def test_ann_checkpoint_scores_alone(trained, capsys, tmp_path):
    data, weights, _ = trained
    out = tmp_path / "ann.json"
    assert main(["eval", "--weights", str(weights), "--gt-coco", str(data["coco"]["test"]), "--imgsz", "64",
                 "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert "snn" not in results and results["seconds_per_image"]["ann"] > 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("ANN"))
    assert row.split()[1] == f"{results['ann']['coco']['AP50']:.3f}"


def test_saved_detections_score_as_the_sweep_and_compare_reads_them(trained, tmp_path, capsys):
    data, weights, _ = trained
    gt, out, saved = str(data["coco"]["test"]), tmp_path / "sweep.json", tmp_path / "dets"
    sweep = ["eval", "--weights", str(weights), "--gt-coco", gt, "--timesteps", "2", "4", "--imgsz", "64",
             "--conf", "0.0", "--save-detections", str(saved)]
    assert main([*sweep, "--json", str(out)]) == 0
    printed = capsys.readouterr()
    assert "detecting: 100%" in printed.err and "detecting:" not in printed.out  # the bar on stderr
    results = json.loads(out.read_text())
    assert sorted(p.name for p in saved.iterdir()) == ["ann.json", "t2.json", "t4.json"]
    for name, row in (("ann", results["ann"]), ("t2", results["snn"]["2"]), ("t4", results["snn"]["4"])):
        assert main(["eval", "--detections", str(saved / f"{name}.json"), "--gt-coco", gt,
                     "--json", str(tmp_path / f"{name}.scored.json")]) == 0
        assert json.loads((tmp_path / f"{name}.scored.json").read_text())["coco"] == row["coco"]

    before = {p.name: p.read_bytes() for p in saved.iterdir()}
    capsys.readouterr()
    assert main(sweep) == 2  # the files exist: nothing is run or overwritten
    assert "already exists" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in saved.iterdir()} == before

    compared = tmp_path / "compare.json"
    assert main(["compare", str(saved / "ann.json"), str(saved / "t2.json"), "--gt-coco", gt, "--labels", "ANN",
                 "T2", "--resamples", "5", "--json", str(compared)]) == 0
    figures = json.loads(compared.read_text())
    assert figures["networks"]["ANN"]["value"] == results["ann"]["coco"]["AP50"]
    assert figures["networks"]["T2"]["value"] == results["snn"]["2"]["coco"]["AP50"]
    printed = capsys.readouterr()
    assert "T2 - ANN" in printed.out
    assert "image draws: 100%" in printed.err and "image draws:" not in printed.out  # results alone on stdout
    assert main(["compare", str(saved / "ann.json"), "--gt-coco", gt, "--metric", "mAP"]) == 2


def test_max_images_scores_as_the_ground_truth_cut_to_those_images(trained, tmp_path):
    data, weights, _ = trained
    model = SpikingYOLO(weights)
    cut = model.val(gt_coco=data["coco"]["test"], max_images=2, imgsz=64, conf=0.0, progress=False)
    gt = read_json(data["coco"]["test"])
    first = sorted(image["id"] for image in gt["images"])[:2]
    small = {**gt, "images": [i for i in gt["images"] if i["id"] in first],
             "annotations": [a for a in gt["annotations"] if a["image_id"] in first]}
    (tmp_path / "images").symlink_to(data["coco"]["test"].parent.parent / "test")
    small_path = tmp_path / "annotations" / "instances_test.json"
    small_path.parent.mkdir()
    small_path.write_text(json.dumps(small))
    whole = model.val(gt_coco=small_path, images=tmp_path / "images", imgsz=64, conf=0.0, progress=False)
    assert cut["ann"]["coco"] == pytest.approx(whole["ann"]["coco"], abs=1e-9)


def test_selection_of_scores_a_runs_held_out_images_as_the_ground_truth_cut_to_them(trained, tmp_path, capsys):
    """Labelled held-out training images scored as the bars are: eval --selection-of CHECKPOINT keeps just the
    images the checkpoint names, and scores them as a ground truth holding only those images would."""
    data, weights, _ = trained
    gt = read_json(data["coco"]["test"])
    folder = data["coco"]["test"].parent.parent / "test"
    kept = sorted(gt["images"], key=lambda i: i["id"])[-3:]  # not the first ones: max_images cannot give these
    paths = [str(folder / i["file_name"]) for i in kept]
    held = tmp_path / "held.pt"
    torch.save({"distill": {"selection_images": paths}}, held)
    out = tmp_path / "cut.json"
    assert main(["eval", "--weights", str(weights), "--gt-coco", str(data["coco"]["test"]), "--imgsz", "64",
                 "--conf", "0.0", "--selection-of", str(held), "--json", str(out), "--save-detections",
                 str(tmp_path / "dets")]) == 0
    cut = json.loads(out.read_text())
    ids = {i["id"] for i in kept}
    small = {**gt, "images": kept, "annotations": [a for a in gt["annotations"] if a["image_id"] in ids]}
    small_path = tmp_path / "annotations" / "instances_test.json"
    small_path.parent.mkdir()
    small_path.write_text(json.dumps(small))
    whole = SpikingYOLO(weights).val(gt_coco=small_path, images=folder, imgsz=64, conf=0.0, progress=False)
    assert cut["run"]["images"] == 3 and cut["ann"]["coco"] == pytest.approx(whole["ann"]["coco"], abs=1e-9)
    # compare draws the same images: its whole-set value is eval's (the other images would count as misses)
    drawn = {}
    for name, only in (("held", ["--selection-of", str(held)]), ("all", [])):
        assert main(["compare", str(tmp_path / "dets" / "ann.json"), "--gt-coco", str(data["coco"]["test"]),
                     "--resamples", "3", "--labels", "a", "--json", str(tmp_path / f"{name}.json"), *only]) == 0
        drawn[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert drawn["held"]["images"] == 3 and drawn["all"]["images"] == len(gt["images"])
    assert drawn["held"]["networks"]["a"]["value"] == pytest.approx(cut["ann"]["coco"]["AP50"], abs=1e-9)
    torch.save({"distill": {"selection_images": paths + [str(tmp_path / "elsewhere.jpg")]}}, held)
    capsys.readouterr()
    assert main(["eval", "--weights", str(weights), "--gt-coco", str(data["coco"]["test"]), "--imgsz", "64",
                 "--selection-of", str(held)]) == 2
    assert "1 of its selection images are not on this machine" in capsys.readouterr().err
    (tmp_path / "elsewhere.jpg").write_bytes(b"")
    assert main(["eval", "--weights", str(weights), "--gt-coco", str(data["coco"]["test"]), "--imgsz", "64",
                 "--selection-of", str(held)]) == 2
    assert "1 of the 4 images to score are not in it, e.g." in capsys.readouterr().err


def test_readme_python_api_example(tmp_path, monkeypatch, capsys):
    """The README's Python API example as written, run in a fresh folder (only smaller: a tiny dataset, one
    epoch at 64 px)."""
    readme = (__import__("pathlib").Path(__file__).resolve().parents[1] / "README.md").read_text()
    example = readme.split("```python\n", 1)[1].split("```", 1)[0]
    small = (example.replace('make_shapes_dataset("data/shapes")', 'make_shapes_dataset("data/shapes", imgsz=64, '
                             'counts={"train": 8, "val": 4, "test": 4}, progress=False)')
             .replace("epochs=50", "epochs=1").replace("imgsz=192", "imgsz=64"))
    assert small.count("64") >= 3 and "epochs=1" in small
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(small, "README.md", "exec"), scope)
    assert scope["scores"]["snn"][16] is not None and (tmp_path / "shapes.snn.pt").is_file()
    assert "ANN row: dual-error ANN (L = 16)" in capsys.readouterr().out  # val prints eval's report
    assert len(scope["results"]) == 4 and all(r.key.endswith(".jpg") for r in scope["results"])
    assert (tmp_path / "runs" / "detect" / "exp" / "detections.json").is_file()
    assert (tmp_path / "runs" / "train" / "exp" / "weights" / "best.pt").is_file()


def test_torchrun_shards_images_and_scores_as_one_process(trained, tmp_path):
    """Two CPU processes under gloo (torchrun) give the mAP one process gives, written once by rank 0."""
    import subprocess
    import sys
    from pathlib import Path

    data, weights, root = trained
    snn = root / "net-dist.snn.pt"
    assert main(["convert", "--weights", str(weights), "--output", str(snn), "--imgsz", "64"]) == 0
    args = ["--weights", str(snn), "--gt-coco", str(data["coco"]["test"]), "--timesteps", "2", "4",
            "--conf", "0.0"]
    assert main(["eval", *args, "--json", str(tmp_path / "one.json")]) == 0
    tool = Path(__file__).resolve().parents[1] / "tools" / "eval_map.py"
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(tool), *args, "--json", str(tmp_path / "two.json")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert one["ann"] == two["ann"] and one["snn"] == two["snn"]
    assert run.stdout.count("SNN T=4") == 1  # only rank 0 reports


def test_float_scores_the_checkpoint_with_its_errors_off(trained, tmp_path, capsys):
    """eval --float scores the network whose dual-error units are plain ReLUs: the detections of the float
    model built by hand, not those of the dual-error ANN (a one-epoch network: compared on raw outputs)."""
    from spikedet.distill import set_levels

    data, weights, _ = trained
    out = tmp_path / "float.json"
    assert main(["eval", "--weights", str(weights), "--gt-coco", str(data["coco"]["test"]), "--imgsz", "64",
                 "--conf", "0.0", "--float", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["run"]["errors"].startswith("off") and "float" in results["run"]["weights"]["network"]
    by_hand = SpikingYOLO(weights)
    set_levels(by_hand.network, None)
    expected = by_hand.val(gt_coco=data["coco"]["test"], imgsz=64, conf=0.0, progress=False, verbose=False)
    assert results["ann"] == expected["ann"]
    x = torch.rand(1, 3, 64, 64)
    dual = SpikingYOLO(weights).network.eval()
    with torch.no_grad():
        assert not torch.allclose(dual(x)[0], by_hand.network.eval()(x)[0])  # the flag changes the network
    snn = tmp_path / "net.snn.pt"
    assert main(["convert", "--weights", str(weights), "--output", str(snn), "--imgsz", "64"]) == 0
    capsys.readouterr()
    assert main(["eval", "--weights", str(snn), "--gt-coco", str(data["coco"]["test"]), "--float"]) == 2
    assert "--float scores an ANN checkpoint alone" in capsys.readouterr().err


def test_an_ann_converts_and_detects_at_the_size_it_was_trained_at(trained, tmp_path):
    _, best, _ = trained  # trained at 64 px; the default for a network without a record is 416
    model = SpikingYOLO(str(best))
    assert model.network.trained_imgsz == 64
    assert model.convert(output=tmp_path / "n.snn.pt").network.meta["imgsz"] == 64
    assert SpikingYOLO(str(tmp_path / "n.snn.pt")).network.meta["imgsz"] == 64
    assert model.stream_settings(None).imgsz == 64  # what predict, detect and eval run it at
