"""Issue 19: a network file is data, never code; values inside files get the checks flags get; ground truth
is checked for meaning; outputs are never overwritten; interruptions end in one line.

Each refusal is checked by its result: exit 2 (130 / 143 for a stop) and exactly one line on stderr, nothing
run, nothing written. Each payload comes with a control showing that it runs when evaluated.
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from spikedet import SpikedetError, SpikingYOLO
from spikedet.cli import main
from conftest import shown_lines

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "weights" / "shapes-yolov3-tiny-n-de-v2.pt"


def run(argv, capsys):
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, shown_lines(err)


def one_line(err, *fragments):
    assert len(err) == 1, err
    for fragment in fragments:
        assert fragment in err[0], (fragment, err[0])


def shipped():
    return torch.load(SHIPPED, map_location="cpu", weights_only=True)


# --- the payloads, and their controls ------------------------------------------------------------------------


class Pickled:
    """A pickle that touches a marker when loaded with weights_only=False (what torch_safe_load does)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def activation_payload(marker):
    return f'__import__("os").system("touch {marker}") or nn.ReLU()'


def poisoned(kind, tmp_path, marker):
    """The shipped checkpoint with one config entry replaced: an activation string, or a torch_safe_load layer
    naming a pickle that runs a command."""
    content = shipped()
    if kind == "activation":
        content["config"]["activation"] = activation_payload(marker)
    else:
        torch.save({"x": Pickled(marker)}, tmp_path / "bomb.pt")
        content["config"]["head"][1] = [-1, 1, "torch_safe_load", [repr(str(tmp_path / "bomb.pt"))]]
    path = tmp_path / f"{kind}.pt"
    torch.save(content, path)
    return path


@pytest.mark.parametrize("kind", ["activation", "torch_safe_load"])
def test_the_payloads_run_when_ultralytics_builds_them(kind, tmp_path):
    """The control: ultralytics' own builder, given the stored config as it is, runs the payload."""
    from ultralytics.nn.tasks import DetectionModel

    marker = tmp_path / "PWNED"
    config = torch.load(poisoned(kind, tmp_path, marker), weights_only=True)["config"]
    try:
        DetectionModel(config, nc=3, verbose=False)
    except Exception:  # noqa: BLE001 -- torch_safe_load returns no layer; the command has run by then
        pass
    assert marker.exists()


@pytest.fixture(scope="module")
def snn_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("snn") / "net.snn.pt"
    SpikingYOLO(SHIPPED).convert(output=path, imgsz=64)
    return path


@pytest.fixture
def inputs(tmp_path):
    """An image, a COCO file naming it, and a dataset YAML whose folders exist."""
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.jpg"), np.full((64, 64, 3), 127, np.uint8))
    gt = {"images": [{"id": 1, "width": 64, "height": 64, "file_name": "a.jpg"}],
          "categories": [{"id": k + 1, "name": n} for k, n in enumerate(("circle", "square", "triangle"))],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 9, 9], "area": 81,
                           "iscrowd": 0}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "data.yaml").write_text(f"path: {tmp_path}\ntrain: images\nval: images\nnames: [circle, square, "
                                        "triangle]\n")
    return tmp_path


ENTRY_POINTS = {
    "detect": lambda w, d: ["detect", "--weights", w, "--source", d / "images", "--project", d / "out"],
    "convert": lambda w, d: ["convert", "--weights", w, "--output", d / "out" / "x.snn.pt", "--imgsz", "64"],
    "eval": lambda w, d: ["eval", "--weights", w, "--gt-coco", d / "gt.json", "--images", d / "images",
                          "--json", d / "out" / "r.json"],
    "train --pretrained": lambda w, d: ["train", "--data", d / "data.yaml", "--pretrained", w, "--epochs", "1",
                                        "--imgsz", "64", "--workers", "0", "--project", d / "out"],
}


def _snn_with_poisoned_source(kind, snn_file, tmp_path, marker):
    content = torch.load(snn_file, weights_only=True)
    content["ann"]["config"] = torch.load(poisoned(kind, tmp_path, marker), weights_only=True)["config"]
    path = tmp_path / f"{kind}.snn.pt"
    torch.save(content, path)
    return path


@pytest.mark.parametrize("source", ["checkpoint", "SNN source record"])
@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("kind", ["activation", "torch_safe_load"])
def test_a_config_payload_runs_nowhere(kind, entry, source, snn_file, inputs, capsys):
    marker = inputs / "PWNED"
    weights = (poisoned(kind, inputs, marker) if source == "checkpoint" else
               _snn_with_poisoned_source(kind, snn_file, inputs, marker))
    code, _, err = run(ENTRY_POINTS[entry](weights, inputs), capsys)
    assert code == 2
    if entry == "train --pretrained" and source != "checkpoint":  # refused before its record is read
        one_line(err, f"error: {weights}: not a spikedet ANN checkpoint")
    else:
        what = "activation" if kind == "activation" else "module 'torch_safe_load' is not one of"
        one_line(err, f"error: {weights}: model config: ", what)
    assert not marker.exists() and not (inputs / "out").exists()


@pytest.mark.parametrize("kind", ["activation", "torch_safe_load"])
def test_a_config_payload_runs_nowhere_in_the_api_and_benchmark(kind, snn_file, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    for weights in (poisoned(kind, tmp_path, marker), _snn_with_poisoned_source(kind, snn_file, tmp_path, marker)):
        with pytest.raises(SpikedetError, match="model config: "):
            SpikingYOLO(weights)
        done = subprocess.run([sys.executable, str(ROOT / "tools" / "benchmark_snn.py"), "--weights", str(weights),
                               "--timesteps", "1", "--json", str(tmp_path / "b.json")],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and "model config: " in done.stderr
    assert not marker.exists() and not (tmp_path / "b.json").exists()


def test_a_config_payload_runs_nowhere_from_a_model_yaml(tmp_path):
    """A model YAML is a stored config too (train --model my.yaml, SpikingYOLO("my.yaml"))."""
    import yaml

    marker = tmp_path / "PWNED"
    config = shipped()["config"]
    config.pop("yaml_file")
    config["activation"] = activation_payload(marker)
    (tmp_path / "evil.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(SpikedetError, match="evil.yaml: model config: activation"):
        SpikingYOLO(str(tmp_path / "evil.yaml"))
    assert not marker.exists()


# --- values inside files ---------------------------------------------------------------------------------------


def _edited(tmp_path, edit, source=None):
    content = torch.load(source or SHIPPED, weights_only=True)
    edit(content)
    path = tmp_path / "edited.pt"
    torch.save(content, path)
    return path


def _first(state, suffix=".weight"):
    return next(k for k in state if k.endswith(suffix))


FILE_CASES = {
    "state dict a list": (lambda c: c.update(state_dict=list(c["state_dict"].values())),
                          "damaged weights: expected a mapping of names to tensors, got list"),
    "version the string 1": (lambda c: c.update(version="1"), "file format version '1' is not a version number"),
    "NaN conv weight": (lambda c: c["state_dict"][_first(c["state_dict"])].view(-1)[0].fill_(float("nan")),
                        "tensor model.0.conv.weight holds non-finite values"),
    "NaN lambda": (lambda c: c["state_dict"][_first(c["state_dict"], ".lam")].fill_(float("nan")),
                   "tensor model.0.act.lam holds non-finite values"),
    "lambda 0": (lambda c: c["state_dict"][_first(c["state_dict"], ".lam")].fill_(0.0),
                 "threshold model.0.act.lam must be > 0, got 0"),
    "lambda -1": (lambda c: c["state_dict"][_first(c["state_dict"], ".lam")].fill_(-1.0),
                  "threshold model.0.act.lam must be > 0, got -1"),
    "a million channels": (lambda c: c["config"]["head"][0][3].__setitem__(0, 1000000),
                           "layer 13 channels must be an integer in 1..8192, got 1000000"),
    "wide within the bounds": (lambda c: (c["config"]["scales"]["n"].__setitem__(1, 4.0),
                                          c["config"]["scales"]["n"].__setitem__(2, 8192),
                                          [layer[3].__setitem__(0, 8192) for layer in c["config"]["head"][:3]]),
                               "the network would need"),
    "levels 0": (lambda c: c["config"]["dual_error"].update(levels=0), "dual-error levels must be an integer"),
    "names not text": (lambda c: c.update(names={0: 1, 1: 2, 2: 3}), "class names must map the indices"),
    "unknown config key": (lambda c: c["config"].update(kpt_shape=[17, 3]), "unknown keys ['kpt_shape']"),
    "trained imgsz 100": (lambda c: c.setdefault("train", {}).setdefault("train_args", {}).update(imgsz=100),
                          "records a training image size 100, not a multiple of 32"),
    "distilled imgsz text": (lambda c: c.update(distill={"imgsz": "416"}),
                             "records a training image size '416', not a multiple of 32"),
}


@pytest.mark.parametrize("case", FILE_CASES)
def test_a_bad_value_in_a_checkpoint_is_one_line(case, inputs, capsys):
    edit, message = FILE_CASES[case]
    path = _edited(inputs, edit)
    code, _, err = run(ENTRY_POINTS["detect"](path, inputs), capsys)
    assert code == 2
    one_line(err, f"error: {path}: ", message)
    assert not (inputs / "out").exists()


SNN_CASES = {
    "NaN SNN weight": (lambda c: c["state_dict"]["layers.0.conv.weight"].view(-1)[0].fill_(float("nan")),
                       "tensor layers.0.conv.weight holds non-finite values"),
    "v_init NaN": (lambda c: c["meta"]["options"].update(v_init=float("nan")), "stored v_init: expected a finite"),
    "v_init -1": (lambda c: c["meta"]["options"].update(v_init=-1.0), "stored v_init: expected a number in [0, 1]"),
    "spikes unknown": (lambda c: c["meta"]["options"].update(spikes="many"), "stored spikes must be one of"),
    "threshold scale 0": (lambda c: c["meta"]["options"].update(threshold_scale=0.0),
                          "stored threshold_scale: expected a number in (0, 1000]"),
    "threshold scale text": (lambda c: c["meta"]["options"].update(threshold_scale="1.3"),
                             "stored threshold_scale must be a number, got '1.3'"),
    "T text": (lambda c: c["meta"].update(timesteps="16"), "stored timesteps must be a number, got '16'"),
    "imgsz 100": (lambda c: c["meta"].update(imgsz=100), "stored imgsz: expected a multiple of 32"),
}


@pytest.mark.parametrize("case", SNN_CASES)
def test_a_bad_value_in_an_snn_file_is_one_line(case, snn_file, inputs, capsys):
    edit, message = SNN_CASES[case]
    path = _edited(inputs, edit, snn_file)
    code, _, err = run(ENTRY_POINTS["detect"](path, inputs), capsys)
    assert code == 2
    one_line(err, f"error: {path}: ", message)


def test_stored_time_steps_are_capped_like_the_flag(snn_file, inputs, capsys):
    path = _edited(inputs, lambda c: c["meta"].update(timesteps=10 ** 9), snn_file)
    code, _, err = run(ENTRY_POINTS["detect"](path, inputs) + ["--method", "steps"], capsys)
    assert code == 2
    one_line(err, f"error: {path}: its stored time steps: T = 1000000000 is above 4096", "--allow-long-t")
    code, _, err = run(ENTRY_POINTS["detect"](path, inputs) + ["--timesteps", "2", "--project", inputs / "o2"],
                       capsys)
    assert code == 0, err  # the flag overrides the stored value


def test_a_huge_darknet_cfg_is_refused_before_allocating(tmp_path):
    from spikedet.darknet import DarknetModel

    for option in ("filters=100000000\nsize=3", "filters=16\nsize=30000"):
        (tmp_path / "big.cfg").write_text(f"[net]\nwidth=64\nheight=64\nchannels=3\n[convolutional]\n{option}\n"
                                          "stride=1\npad=1\nactivation=leaky\n")
        with pytest.raises(SpikedetError, match=r"big.cfg: the network would need [\d.]+ GB for its weights"):
            DarknetModel(tmp_path / "big.cfg")


def test_a_valid_checkpoint_named_pt_or_pth_is_a_file(tmp_path):
    for name in ("NET.PT", "net.pth"):
        (tmp_path / name).write_bytes(SHIPPED.read_bytes())
        assert SpikingYOLO(tmp_path / name).names == {0: "circle", 1: "square", 2: "triangle"}


@pytest.mark.parametrize("call, message", [
    (lambda: SpikingYOLO(123), "model: expected a path, got int 123"),
    (lambda: SpikingYOLO(None), "model: expected a path, got NoneType None"),
    (lambda: SpikingYOLO(SHIPPED, names=["a"]), "names: expected a path, got list"),
    (lambda: SpikingYOLO(SHIPPED).convert(calibration=3), "calibration: expected a path, got int"),
    (lambda: SpikingYOLO(SHIPPED).convert(output=3.5), "output: expected a path, got float"),
    (lambda: SpikingYOLO(SHIPPED).convert(imgsz="64"), "imgsz: expected a number, got str '64'"),
    (lambda: SpikingYOLO(SHIPPED).predict(None), "expected a path, a numpy array or a PIL image, got NoneType"),
    (lambda: SpikingYOLO(SHIPPED).predict(ROOT, timesteps="8"), "timesteps: expected a number, got str"),
    (lambda: SpikingYOLO(SHIPPED).predict(ROOT, conf="high"), "conf: expected a number, got str 'high'"),
    (lambda: SpikingYOLO(SHIPPED).val(gt_coco=5), "gt_coco: expected a path, got int 5"),
    (lambda: SpikingYOLO(SHIPPED).save(None), "path: expected a path, got NoneType"),
])
def test_bad_argument_types_in_the_api_are_one_line_errors(call, message):
    with pytest.raises(SpikedetError) as raised:
        call()
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_a_folder_of_only_non_images_is_refused_like_an_empty_one(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("no image here")
    code, _, err = run(["detect", "--weights", SHIPPED, "--source", tmp_path / "in", "--project", tmp_path / "o"],
                       capsys)
    assert code == 2
    one_line(err, f"{tmp_path / 'in'}: no image or video files among its 1 files")
    assert not (tmp_path / "o").exists()


# --- ground truth checked for meaning --------------------------------------------------------------------------


def _gt(tmp_path, edit, name="gt.json"):
    gt = json.loads((tmp_path / "gt.json").read_text())
    edit(gt)
    path = tmp_path / name
    path.write_text(json.dumps(gt))
    return path


GT_CASES = {
    "duplicate image id": (lambda g: g["images"].append(dict(g["images"][0])), "image id 1 appears more than once"),
    "duplicate annotation id": (lambda g: g["annotations"].append(dict(g["annotations"][0])),
                                "annotation id 1 appears more than once"),
    "empty images": (lambda g: g.update(images=[], annotations=[]), "its `images` list is empty"),
    "only one class": (lambda g: g.update(categories=g["categories"][:1]),
                       "2 of the network's 3 classes are not in the ground truth (square, triangle)"),
}


@pytest.mark.parametrize("case", GT_CASES)
def test_ground_truth_without_meaning_is_refused(case, inputs, capsys):
    edit, message = GT_CASES[case]
    path = _gt(inputs, edit, "bad.json")
    code, _, err = run(["eval", "--weights", SHIPPED, "--gt-coco", path, "--images", inputs / "images",
                        "--imgsz", "64", "--json", inputs / "r.json"], capsys)
    assert code == 2
    one_line(err, f"error: {path}: {message}")
    assert not (inputs / "r.json").exists()


def test_allow_partial_scores_a_network_on_some_of_its_classes(inputs, capsys):
    path = _gt(inputs, lambda g: g.update(categories=g["categories"][:1]), "partial.json")
    code, _, err = run(["eval", "--weights", SHIPPED, "--gt-coco", path, "--images", inputs / "images",
                        "--imgsz", "64", "--allow-partial", "--json", inputs / "r.json"], capsys)
    assert code == 0, err
    assert "coco" in json.loads((inputs / "r.json").read_text())["ann"]
    scores = SpikingYOLO(SHIPPED).val(gt_coco=path, images=inputs / "images", imgsz=64, allow_partial=True,
                                      progress=False)
    assert scores["ann"]["coco"]["AP50"] is not None


def test_coco_annotations_without_iscrowd_are_not_crowds(inputs, capsys):
    def drop(g):
        for ann in g["annotations"]:
            del ann["iscrowd"], ann["area"]

    path = _gt(inputs, drop, "no-crowd.json")
    dets = inputs / "dets.json"
    dets.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [1, 1, 9, 9], "score": 0.9}]))
    code, _, err = run(["eval", "--detections", dets, "--gt-coco", path, "--json", inputs / "r.json"], capsys)
    assert code == 0, err
    assert json.loads((inputs / "r.json").read_text())["coco"]["AP50"] == pytest.approx(1.0)


def test_an_empty_voc_image_set_and_a_binary_names_file_are_one_line(tmp_path, capsys):
    from spikedet.darknet import read_names
    from spikedet.data.voc import read_voc

    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Main" / "test.txt").write_text("\n")
    with pytest.raises(SpikedetError, match="test.txt: lists no images"):
        read_voc(tmp_path, "test")
    (tmp_path / "ImageSets" / "Main" / "test.txt").write_text("a\nb\na\n")
    with pytest.raises(SpikedetError, match="image id a is listed more than once"):
        read_voc(tmp_path, "test")
    (tmp_path / "coco.names").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(SpikedetError, match="coco.names: not a text file"):
        read_names(tmp_path / "coco.names")


# --- outputs -----------------------------------------------------------------------------------------------------


def test_the_api_never_overwrites_unless_asked(tmp_path):
    model = SpikingYOLO(SHIPPED)
    taken = tmp_path / "taken.pt"
    taken.write_bytes(b"the user's file")
    with pytest.raises(SpikedetError, match="already exists: give another name, or overwrite=True"):
        model.convert(output=taken, imgsz=64)
    with pytest.raises(SpikedetError, match="already exists"):
        model.save(taken)
    assert taken.read_bytes() == b"the user's file"
    model.save(taken, overwrite=True)
    assert SpikingYOLO(taken).names == model.names
    model.convert(output=taken, imgsz=64, overwrite=True)
    assert SpikingYOLO(taken).is_snn


def test_a_new_output_is_checked_at_the_move_itself(tmp_path, monkeypatch):
    """Two runs writing one output: the second to finish finds the name taken at its move, and says so."""
    from spikedet import fileio

    target = tmp_path / "out.json"
    real_link = os.link

    def another_run_first(src, dst):  # the other run's file appears between the start and the move
        Path(dst).write_text("the other run's")
        return real_link(src, dst)

    monkeypatch.setattr(fileio.os, "link", another_run_first)
    with pytest.raises(SpikedetError, match="already exists \\(written by another run meanwhile\\)"):
        fileio.atomic_write_json(target, {"mine": 1}, replace=False)
    assert target.read_text() == "the other run's" and sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_benchmark_json_is_checked_before_the_work(tmp_path):
    taken = tmp_path / "taken.json"
    taken.write_text("{}")
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "benchmark_snn.py"), "--json", str(taken)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "argument --json: " in done.stderr and "already exists" in done.stderr and done.stdout == ""


# --- interruptions -----------------------------------------------------------------------------------------------


def _stop_at(monkeypatch, module, name, after: int, stop):
    """Replace module.name by a wrapper that stops the run (stop()) on its call number `after` + 1."""
    real, calls = getattr(module, name), []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) > after:
            stop()
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)


def ctrl_c():
    raise KeyboardInterrupt


def sigterm():
    os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize("stop, code", [(ctrl_c, 130), (sigterm, 143)])
def test_an_interrupted_detect_keeps_matching_images_and_detections(stop, code, tmp_path, capsys, monkeypatch):
    import spikedet.inference

    (tmp_path / "in").mkdir()
    for k in range(5):
        cv2.imwrite(str(tmp_path / "in" / f"{k}.png"), np.full((64, 64, 3), 40 * k, np.uint8))
    _stop_at(monkeypatch, spikedet.inference, "preprocess", 3, stop)
    code_, _, err = run(["detect", "--weights", SHIPPED, "--source", tmp_path / "in", "--imgsz", "64",
                         "--conf", "0", "--project", tmp_path / "runs"], capsys)
    folder = tmp_path / "runs" / "exp"
    assert code_ == code
    one_line(err, f"interrupted: after 3 images; kept {folder}")
    images = sorted(p.name for p in folder.glob("*.png"))
    assert images == ["0.png", "1.png", "2.png"]
    assert sorted({d["image_id"] for d in json.loads((folder / "detections.json").read_text())}) == images


@pytest.mark.parametrize("stop, code", [(ctrl_c, 130), (sigterm, 143)])
def test_an_interrupted_eval_or_convert_is_one_line(stop, code, inputs, capsys, monkeypatch):
    import spikedet.api
    import spikedet.inference

    _stop_at(monkeypatch, spikedet.inference, "preprocess", 0, stop)
    code_, _, err = run(["eval", "--weights", SHIPPED, "--gt-coco", inputs / "gt.json", "--images",
                         inputs / "images", "--imgsz", "64", "--json", inputs / "r.json"], capsys)
    assert code_ == code and not (inputs / "r.json").exists()
    one_line(err, "interrupted: after 0 images; kept nothing")
    _stop_at(monkeypatch, spikedet.api, "reference_ann", 0, stop)
    code_, _, err = run(["convert", "--weights", SHIPPED, "--output", inputs / "x.snn.pt", "--imgsz", "64"], capsys)
    assert code_ == code and not (inputs / "x.snn.pt").exists()
    one_line(err, "interrupted: while converting; kept nothing")


RANK_FAILS = """
import sys
from spikedet.distributed import init_from_env, rank_and_size, together, unshard
from spikedet.errors import SpikedetError
init_from_env("cpu")
try:
    with together():
        if rank_and_size()[0] == int(sys.argv[1]):
            raise ZeroDivisionError("division by zero")
        unshard([1], 2)
except SpikedetError as e:
    sys.stderr.write(f"error: {e}\\n")  # one write, as the CLI does: the ranks share the stream
    sys.exit(2)
"""


@pytest.mark.parametrize("failing", [0, 1])
def test_a_failure_on_one_torchrun_rank_stops_every_rank(failing, tmp_path):
    script = tmp_path / "job.py"
    script.write_text(RANK_FAILS)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(failing)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode != 0
    assert errors == [f"error: process {failing}: ZeroDivisionError: division by zero"] * 2, done.stderr[-2000:]
