"""Issue 11: files that cannot run code, outputs that never overwrite, and every bad value a one-line error.

Every case of the issue, each checked by its result: a refused input gives exit 2 and exactly one `error:`
line on stderr (no traceback, no work done, no folder left behind); an accepted one gives the documented
output, checked by value.
"""
import contextlib
import io
import json
import logging
import re
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from spikedet import SpikedetError, SpikingYOLO
from spikedet import fileio
from spikedet.cli import main
from spikedet.data.coco import read_coco
from spikedet.defaults import DEFAULTS
from spikedet.model.checkpoint import ANN_VERSION
from spikedet.snn.files import SNN_VERSION
from conftest import shown_lines

SHIPPED = Path(__file__).resolve().parents[1] / "weights" / "shapes-yolov3-tiny-n-de-v2.pt"


def run(argv, capsys):
    """(exit status, stdout, stderr lines) of the CLI; main() must return, never raise (SystemExit included)."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, shown_lines(err)


def one_error_line(err, *fragments):
    """stderr is exactly one `error:` line holding every fragment."""
    assert len(err) == 1 and err[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in err[0], (fragment, err[0])
    return err[0]


def tree(folder: Path):
    """Every path under a folder (hidden files included), relative, sorted; [] for a missing folder."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) if folder.exists() else []


# --- files that cannot run code ---------------------------------------------------------------------------------


class Payload:
    """A pickled object that runs a shell command when unpickled: the attack of issue 11, item 1."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def payload(tmp_path):
    path, marker = tmp_path / "evil.pt", tmp_path / "PWNED"
    torch.save({"model": Payload(marker)}, path)
    return path, marker


def test_the_payload_is_live(tmp_path):
    """The control: opened as torch.load(weights_only=False) would open it, the file runs its command."""
    control = tmp_path / "control-marker"
    torch.save({"model": Payload(control)}, tmp_path / "control.pt")
    torch.load(tmp_path / "control.pt", weights_only=False)
    assert control.exists()


ENTRY_POINTS = {
    "convert": lambda p, d, tmp: ["convert", "--weights", p, "--output", tmp / "out" / "net.snn.pt"],
    "eval": lambda p, d, tmp: ["eval", "--weights", p, "--gt-coco", d["coco"]["test"],
                               "--json", tmp / "out" / "r.json"],
    "detect": lambda p, d, tmp: ["detect", "--weights", p, "--source", d["voc"] / "JPEGImages",
                                 "--project", tmp / "out"],
    "train --resume": lambda p, d, tmp: ["train", "--resume", p, "--project", tmp / "out"],
    "train --pretrained": lambda p, d, tmp: ["train", "--data", d["yolo"], "--pretrained", p, "--epochs", "1",
                                             "--imgsz", "64", "--workers", "0", "--project", tmp / "out"],
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_pickled_payload_runs_nowhere(entry, payload, trained, tmp_path, capsys):
    path, marker = payload
    code, _, err = run(ENTRY_POINTS[entry](path, trained[0], tmp_path), capsys)
    assert code == 2
    one_error_line(err, f"error: {path}: holds pickled Python objects", "can run code")
    assert not marker.exists()
    assert tree(tmp_path / "out") == []  # refused before anything was written


def test_a_pickled_payload_runs_nowhere_in_the_python_api(payload, trained, tmp_path):
    from spikedet.train import train

    path, marker = payload
    with pytest.raises(SpikedetError, match="holds pickled Python objects"):
        SpikingYOLO(path)
    with pytest.raises(SpikedetError, match="holds pickled Python objects"):
        train(None, resume=str(path), project=tmp_path / "out")
    assert not marker.exists()


@pytest.fixture(scope="module")
def snn_file(trained, tmp_path_factory):
    """An SNN converted for T = 100000, allowed with --allow-long-t (for convert, T is only recorded)."""
    _, weights, _ = trained
    path = tmp_path_factory.mktemp("snn") / "long.snn.pt"
    assert main(["convert", "--weights", str(weights), "--output", str(path), "--imgsz", "64",
                 "--timesteps", "100000", "--allow-long-t"]) == 0
    return path


def test_timesteps_above_the_bound_are_recorded_with_allow_long_t(snn_file):
    content = torch.load(snn_file, weights_only=True)
    assert content["format"] == "spikedet-snn" and content["version"] == SNN_VERSION
    assert content["meta"]["timesteps"] == 100000 and content["meta"]["options"]["timesteps"] == 100000
    assert content["meta"]["imgsz"] == 64


@pytest.mark.parametrize("kind, step", [("ann", 1), ("ann", -1), ("snn", 1), ("snn", -1)])
def test_another_format_version_is_a_one_line_error(kind, step, trained, snn_file, tmp_path, capsys):
    source, version = (trained[1], ANN_VERSION) if kind == "ann" else (snn_file, SNN_VERSION)
    content = torch.load(source, weights_only=True)
    content["version"] = version + step
    path = tmp_path / f"{kind}-v{version + step}.pt"
    torch.save(content, path)
    code, _, err = run(["detect", "--weights", path, "--source", trained[0]["voc"] / "JPEGImages",
                        "--project", tmp_path / "runs"], capsys)
    assert code == 2
    one_error_line(err, f"{path}: spikedet-{kind} file format version {version + step}; this spikedet reads "
                        f"version {version} ({'newer' if step > 0 else 'older'} file")
    assert tree(tmp_path / "runs") == []


def test_a_pickled_file_of_an_older_spikedet_is_named_as_such(trained, tmp_path, capsys):
    """spikedet <= 0.1 pickled whole networks (SNN format version 1): refused unopened, with what to do."""
    from spikedet.snn.neurons import BinaryNeuron

    path = tmp_path / "old.snn.pt"
    torch.save({"format": "spikedet-snn", "version": 1, "network": BinaryNeuron(0.5, "subtract")}, path)
    code, _, err = run(["detect", "--weights", path, "--source", trained[0]["voc"] / "JPEGImages",
                        "--project", tmp_path / "runs"], capsys)
    assert code == 2 and tree(tmp_path / "runs") == []
    one_error_line(err, f"{path}: holds pickled Python objects (spikedet.snn.neurons.BinaryNeuron): a file of an "
                        "older spikedet", "convert (or train) again with this spikedet")


def test_a_third_party_checkpoint_names_the_refused_object(tmp_path):
    path = tmp_path / "yolo.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, path)
    with pytest.raises(SpikedetError, match=r"holds pickled Python objects \(torch.nn.modules.linear.Linear: an "
                                            r"ultralytics or other PyTorch checkpoint\).*save a state dict"):
        SpikingYOLO(path)


# --- every option checked before any work -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Stand-ins the parser checks for existence (the weights are not a network: a value that got past the
    checks would fail later with another message, which the table would catch)."""
    root = tmp_path_factory.mktemp("inputs")
    (root / "w.pt").write_bytes(b"not read")
    (root / "folder").mkdir()
    (root / "file.txt").write_text("a file")
    cv2.imwrite(str(root / "img.jpg"), np.zeros((32, 32, 3), np.uint8))
    gt = {"images": [{"id": 1, "width": 32, "height": 32, "file_name": "img.jpg"}],
          "categories": [{"id": 1, "name": "circle"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10], "area": 100,
                           "iscrowd": 0}]}
    (root / "gt.json").write_text(json.dumps(gt))
    (root / "dets.json").write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10],
                                                 "score": 0.9}]))
    (root / "images").mkdir()
    (root / "syntax.yaml").write_text("names: [a, b]\ntrain: [images\nval: images\n")
    (root / "no-val-images.yaml").write_text(f"path: {root}\ntrain: images\nval: missing/val\nnames: [a]\n")
    (root / "not-a-mapping.yaml").write_text("- a\n- b\n")
    (root / "nc.yaml").write_text(f"path: {root}\ntrain: images\nval: images\nnames: [a, b]\nnc: 3\n")
    (root / "bad-split.yaml").write_text(f"path: {root}\ntrain: 5\nval: images\nnames: [a]\n")
    return root


W = "--weights {w}"
CONVERT = f"convert {W} --output {{out}}/net.snn.pt"
EVAL_NET = f"eval {W} --gt-coco {{gt}}"
EVAL_DETS = "eval --detections {dets} --gt-coco {gt}"
DETECT = f"detect {W} --source {{img}} --project {{out}}/runs"
TRAIN = "train --project {out}/runs"

# (command line, the message fragment) -- issue 11, items 4 and 5, and the checks it asks for.
CLI_CASES = {
    # timesteps: a positive integer, at most max_timesteps unless --allow-long-t
    "eval T 0": (f"{EVAL_NET} --timesteps 0", "argument --timesteps: expected a number of time steps >= 1, got 0"),
    "eval T negative": (f"{EVAL_NET} --timesteps 8 -4", "argument --timesteps: expected a number of time steps"),
    "detect T 0": (f"{DETECT} --timesteps 0", "argument --timesteps: expected a number of time steps >= 1, got 0"),
    "detect T negative": (f"{DETECT} --timesteps -3", "argument --timesteps: expected a number of time steps"),
    "convert T -5": (f"{CONVERT} --timesteps -5", "argument --timesteps: expected a number of time steps >= 1, "
                                                  "got -5"),
    "convert T 100000": (f"{CONVERT} --timesteps 100000", "argument --timesteps: T = 100000 is above 4096 "
                                                          "(hours per image on a CPU); add --allow-long-t"),
    "eval T 100000": (f"{EVAL_NET} --timesteps 8 100000", "T = 100000 is above 4096"),
    "detect T 100000": (f"{DETECT} --timesteps 100000", "T = 100000 is above 4096"),
    "T not a number": (f"{DETECT} --timesteps 1e3", "argument --timesteps: expected a number of time steps, "
                                                    "got '1e3'"),
    # counts
    "eval max-images 0": (f"{EVAL_NET} --max-images 0", "argument --max-images: expected a positive integer >= 1, "
                                                        "got 0"),
    "eval max-images -1": (f"{EVAL_NET} --max-images -1", "argument --max-images: expected a positive integer"),
    "eval batch 0": (f"{EVAL_NET} --batch 0", "argument --batch: expected a positive integer >= 1, got 0"),
    "train batch 0": (f"{TRAIN} --data {{yaml_ok}} --batch 0", "argument --batch: expected a positive integer"),
    "train epochs 0": (f"{TRAIN} --data {{yaml_ok}} --epochs 0", "argument --epochs: expected a positive integer"),
    "detect chunk -2": (f"{DETECT} --chunk -2", "argument --chunk: expected a positive integer >= 1, got -2"),
    "detect chunk 0": (f"{DETECT} --chunk 0", "argument --chunk: expected a positive integer >= 1, got 0"),
    "eval chunk -2": (f"{EVAL_NET} --chunk -2", "argument --chunk: expected a positive integer"),
    "convert calibration-count 0": (f"{CONVERT} --calibration-count 0",
                                    "argument --calibration-count: expected a positive integer >= 1, got 0"),
    # image sizes: 32 .. 8192, a multiple of 32
    "detect imgsz -32": (f"{DETECT} --imgsz -32", "argument --imgsz: expected an image size in pixels (a "
                                                  "multiple of 32) in 32..8192, got -32"),
    "convert imgsz -32": (f"{CONVERT} --imgsz -32", "argument --imgsz: expected an image size"),
    "convert imgsz 0": (f"{CONVERT} --imgsz 0", "argument --imgsz: expected an image size"),
    "eval imgsz 100": (f"{EVAL_NET} --imgsz 100", "argument --imgsz: expected a multiple of 32"),
    "train imgsz 0": (f"{TRAIN} --data {{yaml_ok}} --imgsz 0", "argument --imgsz: expected an image size"),
    # numbers: finite, in range
    "convert percentile nan": (f"{CONVERT} --percentile nan", "argument --percentile: expected a finite number, "
                                                              "got 'nan'"),
    "convert percentile 150": (f"{CONVERT} --percentile 150", "argument --percentile: expected a number in "
                                                              "(0, 100], got 150"),
    "convert percentile 0": (f"{CONVERT} --percentile 0", "argument --percentile: expected a number in (0, 100]"),
    "convert threshold-scale 0": (f"{CONVERT} --threshold-scale 0", "argument --threshold-scale: expected a "
                                                                    "number in (0, 1000], got 0"),
    "convert threshold-scale inf": (f"{CONVERT} --threshold-scale inf", "argument --threshold-scale: expected a "
                                                                        "finite number, got 'inf'"),
    "convert v-init nan": (f"{CONVERT} --v-init nan", "argument --v-init: expected a finite number, got 'nan'"),
    "convert v-init 2": (f"{CONVERT} --v-init 2", "argument --v-init: expected a number in [0, 1], got 2"),
    "detect conf nan": (f"{DETECT} --conf nan", "argument --conf: expected a finite number, got 'nan'"),
    "eval conf nan": (f"{EVAL_NET} --conf nan", "argument --conf: expected a finite number"),
    "eval conf -0.1": (f"{EVAL_NET} --conf -0.1", "argument --conf: expected a number in [0, 1], got -0.1"),
    "detect iou 0": (f"{DETECT} --iou 0", "argument --iou: expected a number in (0, 1], got 0"),
    "eval iou inf": (f"{EVAL_NET} --iou inf", "argument --iou: expected a finite number, got 'inf'"),
    "detect device nonsense": (f"{DETECT} --device nonsense", "argument --device: expected cpu, cuda, cuda:N or "
                                                              "mps, got 'nonsense'"),
    "eval device cuda:x": (f"{EVAL_NET} --device cuda:x", "argument --device: expected cpu, cuda, cuda:N or mps"),
    # directories where files are expected, files where folders are
    "convert cfg DIR": (f"{CONVERT} --cfg {{folder}}", "argument --cfg: {folder} is a directory, expected a file"),
    "detect cfg DIR": (f"{DETECT} --cfg {{folder}}", "argument --cfg: {folder} is a directory, expected a file"),
    "eval cfg DIR": (f"{EVAL_NET} --cfg {{folder}}", "argument --cfg: {folder} is a directory, expected a file"),
    "detect weights DIR": ("detect --weights {folder} --source {img}",
                           "argument --weights: {folder} is a directory, expected a file"),
    "eval gt-coco DIR": (f"{EVAL_DETS.replace('{gt}', '{folder}')}",
                         "argument --gt-coco: {folder} is a directory, expected a file"),
    "eval gt-voc FILE": ("eval --detections {dets} --gt-voc {file}", "argument --gt-voc: {file}: is a file, "
                                                                     "expected a folder"),
    "eval images FILE": (f"{EVAL_NET} --images {{file}}", "argument --images: {file}: is a file, expected a folder"),
    "train data DIR": (f"{TRAIN} --data {{folder}}", "argument --data: {folder} is a directory, expected a file"),
    "weights missing": ("convert --weights {folder}/none.pt --output {out}/x.pt",
                        "argument --weights: {folder}/none.pt: file not found"),
    # output paths: writable before computing
    "convert output DIR": (f"convert {W} --output {{folder}}", "argument --output: {folder}: is a directory, "
                                                               "expected a file path"),
    "eval json DIR": (f"{EVAL_DETS} --json {{folder}}", "argument --json: {folder}: is a directory"),
    "eval plot DIR": (f"{EVAL_NET} --plot {{folder}}", "argument --plot: {folder}: is a directory"),
    "convert output under a file": (f"convert {W} --output {{file}}/net.pt", "argument --output: {file}/net.pt: "
                                                                             "cannot be written: {file} is a file"),
    "eval json under a file": (f"{EVAL_DETS} --json {{file}}/a/r.json", "cannot be written: {file} is a file"),
    "eval plot under a file": (f"{EVAL_NET} --plot {{file}}/p.png", "cannot be written: {file} is a file"),
    "detect project FILE": (f"detect {W} --source {{img}} --project {{file}}", "argument --project: {file}: is a "
                                                                               "file, expected a folder"),
    "detect project under a file": (f"detect {W} --source {{img}} --project {{file}}/runs",
                                    "argument --project: {file}/runs: cannot be created: {file} is a file"),
    "train project FILE": ("train --data {yaml_ok} --project {file}", "argument --project: {file}: is a file"),
    # the dataset YAML, checked by spikedet before ultralytics reads it
    "train yaml syntax error": (f"{TRAIN} --data {{folder_}}syntax.yaml", "{folder_}syntax.yaml: not valid YAML "
                                                                          "at line"),
    "train yaml missing images": (f"{TRAIN} --data {{folder_}}no-val-images.yaml",
                                  "{folder_}no-val-images.yaml: val images not found: {folder_}missing/val"),
    "train yaml not a mapping": (f"{TRAIN} --data {{folder_}}not-a-mapping.yaml", "no `names` list"),
    "train yaml nc mismatch": (f"{TRAIN} --data {{folder_}}nc.yaml", "nc: 3 does not match the 2 class names"),
    "train yaml split a number": (f"{TRAIN} --data {{folder_}}bad-split.yaml", "'train' must name image folders"),
    # other one-line errors of the same commands
    "detect name with a path": (f"{DETECT} --name ../escape", "run name '../escape' must be a plain folder name"),
}


@pytest.mark.parametrize("case", CLI_CASES)
def test_every_bad_value_is_one_line_and_exit_2(case, inputs, tmp_path, capsys):
    line, fragment = CLI_CASES[case]
    paths = {"w": inputs / "w.pt", "gt": inputs / "gt.json", "dets": inputs / "dets.json", "img": inputs / "img.jpg",
             "folder": inputs / "folder", "file": inputs / "file.txt", "out": tmp_path / "out",
             "folder_": f"{inputs}/", "yaml_ok": inputs / "no-val-images.yaml"}
    if case == "detect name with a path":  # gets past the parser: needs a network that loads
        paths["w"] = SHIPPED
    code, out, err = run(line.format(**paths).split(), capsys)
    assert code == 2
    one_error_line(err, fragment.format(**paths))
    assert tree(tmp_path / "out") == []  # refused before any work: nothing written, no run folder


@pytest.mark.parametrize("count, device, fragment", [
    (0, "cuda", "argument --device: cuda: no CUDA device on this machine (use --device cpu)"),
    (2, "cuda:2", "argument --device: cuda:2: this machine has 2 CUDA device(s), cuda:0 .. cuda:1"),
    (0, "train 0", "argument --device: 0: no CUDA device on this machine (use --device cpu)"),
    (2, "train 1,2", "argument --device: 1,2: this machine has 2 CUDA device(s), 0 .. 1"),
    (2, "train gpu", "argument --device: expected cpu, cuda, cuda:N or mps, got 'gpu'"),
])
def test_a_missing_cuda_device_is_refused_before_any_work(count, device, fragment, inputs, tmp_path, capsys,
                                                          monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    if device.startswith("train "):
        argv = ["train", "--data", inputs / "no-val-images.yaml", "--device", device.split()[1]]
    else:
        argv = ["detect", "--weights", inputs / "w.pt", "--source", inputs / "img.jpg", "--device", device]
    code, _, err = run(argv + ["--project", tmp_path / "runs"], capsys)
    assert code == 2
    one_error_line(err, fragment)
    assert not (tmp_path / "runs").exists()


def test_present_devices_are_accepted(monkeypatch):
    from spikedet import checks

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert [checks.device(d) for d in ("cpu", "cuda", "cuda:1")] == ["cpu", "cuda", "cuda:1"]
    devices = ("cpu", "0", "0,1", "-1", "cuda:0")
    assert [checks.training_device(d) for d in devices] == list(devices)


def test_the_timesteps_bound_is_stated_in_the_help(capsys):
    assert main(["detect", "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"allow T above {DEFAULTS['max_timesteps']}" in help_text


def test_a_dataset_yaml_cannot_run_its_download_code(tmp_path, capsys, monkeypatch):
    """ultralytics runs a dataset YAML's `download` (Python code or a bash script) when it does not find the
    val images; it resolves a relative `path` from the current folder, spikedet's readers from the YAML's.
    Both the code and the mismatch are refused before ultralytics reads the file."""
    marker = tmp_path / "PWNED"
    (tmp_path / "data" / "ds" / "images").mkdir(parents=True)
    yaml_path = tmp_path / "data" / "evil.yaml"
    body = "path: ds\ntrain: images\nval: images\nnames: [a]\n"
    yaml_path.write_text(body + f"download: \"open('{marker}', 'w').close()\"\n")
    monkeypatch.chdir(tmp_path)  # ds/ is not here, nor in ultralytics' datasets folder
    code, _, err = run(["train", "--data", yaml_path, "--project", tmp_path / "runs"], capsys)
    assert code == 2
    one_error_line(err, f"{yaml_path}: its `download` entry is a script or Python code")
    yaml_path.write_text(body)  # no code, but images where ultralytics would not look
    code, _, err = run(["train", "--data", yaml_path, "--project", tmp_path / "runs"], capsys)
    assert code == 2
    one_error_line(err, f"{yaml_path}: train images not found", "give an absolute path")
    assert not marker.exists() and not (tmp_path / "runs").exists()


# --- output paths in a read-only folder -------------------------------------------------------------------------


def _as_unprivileged_user(argv):
    """main(argv) in a forked child running as nobody (root writes into a 0555 folder regardless): (code,
    stderr). Only the argument checks run there, so nothing heavier than argparse runs in the child."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = main(argv)
            os.write(write, json.dumps([code, err.getvalue()]).encode())
        except BaseException as e:  # noqa: BLE001 -- reported to the parent as a failure
            os.write(write, json.dumps([f"raised {e!r}", ""]).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)


@pytest.fixture
def read_only_folder():
    """A 0555 folder inside a 0755 one under /tmp (pytest's own tmp folders are 0700: nobody could not even
    look into them, which would fail the check for another reason)."""
    outer = Path(tempfile.mkdtemp(prefix="spikedet-ro-"))
    outer.chmod(0o755)
    (outer / "dets.json").write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5],
                                                  "score": 0.9}]))
    (outer / "gt.json").write_text(json.dumps({"images": [{"id": 1, "width": 9, "height": 9}],
                                               "categories": [{"id": 1, "name": "a"}], "annotations": []}))
    (outer / "w.pt").write_bytes(b"not read")
    (outer / "ro").mkdir()
    (outer / "ro").chmod(0o555)
    yield outer
    (outer / "ro").chmod(0o755)
    shutil.rmtree(outer)


@pytest.mark.parametrize("args, option", [
    (["eval", "--detections", "{o}/dets.json", "--gt-coco", "{o}/gt.json", "--json", "{o}/ro/r.json"], "--json"),
    (["eval", "--weights", "{o}/w.pt", "--gt-coco", "{o}/gt.json", "--plot", "{o}/ro/sub/p.png"], "--plot"),
    (["convert", "--weights", "{o}/w.pt", "--output", "{o}/ro/net.snn.pt"], "--output"),
    (["detect", "--weights", "{o}/w.pt", "--source", "{o}/gt.json", "--project", "{o}/ro/runs"], "--project"),
])
def test_an_output_in_a_read_only_folder_is_refused_before_any_work(args, option, read_only_folder, capsys):
    argv = [a.format(o=read_only_folder) for a in args]
    if os.geteuid() == 0:
        code, err = _as_unprivileged_user(argv)
    else:
        code, _, err = run(argv, capsys)
        err = "\n".join(err) + "\n"
    assert code == 2, (code, err)
    assert err.count("\n") == 1
    one_error_line(err.splitlines(), f"argument {option}: ", f"cannot be written: {read_only_folder}/ro is not "
                                                             "writable")
    assert list((read_only_folder / "ro").iterdir()) == []


@pytest.mark.parametrize("option", ["--output", "--json"])
def test_an_existing_output_is_never_overwritten(option, tmp_path, capsys):
    existing = tmp_path / "taken.pt"
    existing.write_bytes(b"the user's file")
    (tmp_path / "gt.json").write_text("{}")
    argv = (["convert", "--weights", SHIPPED, "--output", existing] if option == "--output" else
            ["eval", "--weights", SHIPPED, "--gt-coco", tmp_path / "gt.json", "--json", existing])
    code, _, err = run(argv, capsys)
    assert code == 2
    one_error_line(err, f"argument {option}: {existing}: already exists")
    assert existing.read_bytes() == b"the user's file"


# --- ground truth -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bbox, problem", [
    ([10, 10, -5, 20], "annotation 7: bbox [10, 10, -5, 20] has a non-positive width or height"),
    ([10, 10, 20, 0], "annotation 7: bbox [10, 10, 20, 0] has a non-positive width or height"),
    ([float("nan"), 10, 20, 20], "annotation 7: bbox must be 4 finite numbers [x, y, w, h], got [nan, 10, 20, 20]"),
    ([10, 10, float("inf"), 20], "annotation 7: bbox must be 4 finite numbers"),
    ([10, 10, "20", 20], "annotation 7: bbox must be 4 finite numbers"),
    ([10, 10, 20], "annotation 7: bbox must be 4 finite numbers"),
])
def test_coco_ground_truth_with_a_bad_box_is_refused_with_its_id(bbox, problem, tmp_path, capsys):
    gt = {"images": [{"id": 1, "width": 64, "height": 64, "file_name": "a.jpg"}],
          "categories": [{"id": 1, "name": "circle"}],
          "annotations": [{"id": 3, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0},
                          {"id": 7, "image_id": 1, "category_id": 1, "bbox": bbox, "area": 1, "iscrowd": 0}]}
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(gt))  # json writes NaN and Infinity, and reads them back
    dets = tmp_path / "dets.json"
    dets.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "score": 0.9}]))
    code, _, err = run(["eval", "--detections", dets, "--gt-coco", path, "--json", tmp_path / "r.json"], capsys)
    assert code == 2 and not (tmp_path / "r.json").exists()
    one_error_line(err, f"{path}: {problem}")
    with pytest.raises(SpikedetError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        read_coco(path)  # the reader behind eval --weights and the COCO -> YOLO conversion


def test_a_network_scored_on_bad_ground_truth_is_refused(trained, tmp_path, capsys):
    data, weights, _ = trained
    gt = json.loads(data["coco"]["test"].read_text())
    gt["annotations"][0]["bbox"][2] = -1.0
    path = tmp_path / "annotations" / "instances_test.json"
    path.parent.mkdir()
    path.write_text(json.dumps(gt))
    code, _, err = run(["eval", "--weights", weights, "--gt-coco", path, "--images",
                        data["coco"]["test"].parent.parent / "test", "--imgsz", "64"], capsys)
    assert code == 2
    one_error_line(err, f"{path}: annotation {gt['annotations'][0]['id']}: bbox", "non-positive width or height")


# --- detect: outputs keyed by relative path, the user's umask, nothing left by a refused run ------------------


@contextlib.contextmanager
def umask(mask):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def _detections(run_folder):
    found = {}
    for d in json.loads((run_folder / "detections.json").read_text()):
        found.setdefault(d["image_id"], []).append((d["category_id"], [round(v, 3) for v in d["bbox"]],
                                                    round(d["score"], 5)))
    return found


def test_one_stem_two_formats_and_a_video_never_share_an_output(trained, tmp_path, capsys):
    """a.jpg and a.png (the same pixels), a video clip.avi beside an image clip_000000.jpg (the old frame
    name), and a.mpo (a JPEG OpenCV reads but cannot write) beside an image a.mpo.jpg (its fallback name)."""
    data, weights, _ = trained
    source = tmp_path / "in"
    source.mkdir()
    good = sorted((data["voc"] / "JPEGImages").glob("*.jpg"))[:2]
    shutil.copyfile(good[0], source / "a.jpg")
    pixels = cv2.imread(str(source / "a.jpg"))
    cv2.imwrite(str(source / "a.png"), pixels)  # lossless: the same image as a.jpg decodes to
    shutil.copyfile(good[1], source / "clip_000000.jpg")
    shutil.copyfile(good[1], source / "a.mpo")
    shutil.copyfile(good[0], source / "a.mpo.jpg")
    writer = cv2.VideoWriter(str(source / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 64))
    for frame in (cv2.imread(str(good[0])), cv2.imread(str(good[1]))):
        writer.write(frame)
    writer.release()
    with umask(0o022):
        code, out, err = run(["detect", "--weights", weights, "--source", source, "--imgsz", "64", "--conf", "0",
                              "--project", tmp_path / "runs", "--save-txt"], capsys)
    assert code == 0, err
    assert "7 images" in out and "0 files skipped" in out
    folder = tmp_path / "runs" / "exp"
    found = _detections(folder)
    keys = ["a.jpg", "a.mpo", "a.mpo.jpg", "a.png", "clip.avi/000000", "clip.avi/000001", "clip_000000.jpg"]
    assert sorted(found) == keys
    assert found["a.jpg"] == found["a.png"] and found["a.jpg"] == found["a.mpo.jpg"]
    assert found["a.mpo"] == found["clip_000000.jpg"] and len(found["a.jpg"]) > 0
    images = ["a.jpg", "a.mpo.jpg", "a.mpo~2.jpg", "a.png", "clip_000000.jpg"]
    # labels named like ultralytics' (stem.txt), by key where two inputs share a stem; video frames clip_K.txt
    labels = ["labels/a.txt", "labels/a.mpo.jpg.txt", "labels/a.mpo.txt", "labels/a.png.txt", "labels/clip_0.txt",
              "labels/clip_1.txt", "labels/clip_000000.txt"]
    assert tree(folder) == sorted(images + labels + ["clip.avi", "labels", "detections.json"])  # clip.avi: annotated
    for name in images:
        assert cv2.imread(str(folder / name)).shape == (64, 64, 3)
    for path in folder.rglob("*"):  # the user's umask, not the temporary file's 0600
        assert path.stat().st_mode & 0o777 == (0o755 if path.is_dir() else 0o644), path


def test_output_files_take_the_umask(tmp_path):
    for mask, mode in ((0o022, 0o644), (0o002, 0o664), (0o077, 0o600)):
        with umask(mask):
            path = fileio.atomic_write_json(tmp_path / f"{mask:o}" / "x.json", {"a": 1})
        assert path.stat().st_mode & 0o777 == mode and json.loads(path.read_text()) == {"a": 1}


def test_converted_and_scored_files_take_the_umask(trained, tmp_path, capsys):
    data, weights, _ = trained
    with umask(0o022):
        code, _, err = run(["convert", "--weights", weights, "--output", tmp_path / "n.snn.pt", "--imgsz", "64"],
                           capsys)
        assert code == 0, err
        dets = tmp_path / "dets.json"
        dets.write_text("[]")
        assert run(["eval", "--detections", dets, "--gt-coco", data["coco"]["test"], "--json",
                    tmp_path / "r.json"], capsys)[0] == 0
    assert (tmp_path / "n.snn.pt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644
    assert json.loads((tmp_path / "r.json").read_text())["coco"]["AP50"] == 0.0  # no detections score 0


def test_a_run_that_fails_before_writing_leaves_no_folder(trained, tmp_path, capsys, monkeypatch):
    data, weights, _ = trained
    import spikedet.detect

    def fail_first(*args, **kwargs):
        raise SpikedetError("in.jpg: failed on the first image")
        yield  # a generator, as detections_in is

    monkeypatch.setattr(spikedet.detect, "detections_in", fail_first)
    code, _, err = run(["detect", "--weights", weights, "--source", data["voc"] / "JPEGImages",
                        "--project", tmp_path / "runs"], capsys)
    assert code == 2
    one_error_line(err, "error: in.jpg: failed on the first image")
    assert tree(tmp_path / "runs") == []
    code, _, err = run(["detect", "--weights", weights, "--source", tmp_path / "nothing-here",
                        "--project", tmp_path / "runs"], capsys)
    assert code == 2
    one_error_line(err, f"{tmp_path / 'nothing-here'}: no such file, folder or glob match")
    assert tree(tmp_path / "runs") == []


@pytest.mark.parametrize("where, error", [("replace", OSError), ("fsync", OSError), ("replace", KeyboardInterrupt)])
def test_a_failed_write_leaves_no_temporary_and_keeps_the_old_file(where, error, tmp_path, monkeypatch):
    target = tmp_path / "out.json"
    target.write_text("old")

    def boom(*args, **kwargs):
        raise error("interrupted")

    monkeypatch.setattr(fileio.os, where, boom)
    with pytest.raises(error):
        fileio.atomic_write_json(target, {"new": 1})
    monkeypatch.undo()
    assert tree(tmp_path) == ["out.json"] and target.read_text() == "old"


def test_temporary_names_are_hidden_from_detect_sources(tmp_path):
    """A write killed outright (SIGKILL) cannot clean up: its .NAME.*.tmp is hidden, and detect skips it."""
    from spikedet.sources import list_sources

    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / ".a.jpg.x1y2.tmp").write_bytes(b"half")
    assert list_sources(tmp_path)[0] == [tmp_path / "a.jpg"]


# --- unreadable images: skipped and counted, in calibration as in detect ----------------------------------------


def test_calibration_skips_unreadable_images_as_detect_does(trained, tmp_path, capsys, caplog):
    from spikedet.inference import calibration_images, load_image, preprocess

    data, weights, _ = trained
    folder = tmp_path / "calib"
    folder.mkdir()
    good = sorted((data["voc"] / "JPEGImages").glob("*.jpg"))[:2]
    (folder / "a_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    (folder / "b_cut.jpg").write_bytes(good[0].read_bytes()[:-300])  # truncated: no end-of-image marker
    shutil.copyfile(good[0], folder / "c.jpg")
    shutil.copyfile(good[1], folder / "d.jpg")
    with caplog.at_level(logging.WARNING):
        code, out, err = run(["convert", "--weights", weights, "--output", tmp_path / "n.snn.pt", "--imgsz", "64",
                              "--calibration", folder, "--calibration-count", "2"], capsys)
    assert code == 0, err
    assert torch.load(tmp_path / "n.snn.pt", weights_only=True)["format"] == "spikedet-snn"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("a_corrupt.jpg: not a readable image" in w for w in warnings), warnings
    assert any("b_cut.jpg: truncated JPEG" in w for w in warnings), warnings
    images = calibration_images(folder, 64, count=2)  # the two good ones, the bad ones skipped
    expected = torch.stack([preprocess(load_image(folder / name), 64) for name in ("c.jpg", "d.jpg")])
    assert torch.equal(images, expected)
    # the same truncated file in detect: skipped and counted, the good ones detected
    code, out, err = run(["detect", "--weights", weights, "--source", folder, "--imgsz", "64", "--conf", "0",
                          "--project", tmp_path / "runs"], capsys)
    assert code == 0 and "2 images" in out and "2 files skipped" in out and "b_cut.jpg: truncated JPEG" in out
    assert sorted(_detections(tmp_path / "runs" / "exp")) == ["c.jpg", "d.jpg"]
    assert tree(tmp_path / "runs" / "exp") == ["c.jpg", "d.jpg", "detections.json"]


# --- outside spikedet's CLI -------------------------------------------------------------------------------------


def test_a_failing_benchmark_worker_is_one_line_and_exit_2(monkeypatch, capsys):
    import subprocess
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import benchmark_snn

    crash = subprocess.CompletedProcess(
        [], 1, stdout="", stderr="Traceback (most recent call last):\n  ...\nRuntimeError: out of memory\n")
    monkeypatch.setattr(benchmark_snn.subprocess, "run", lambda *a, **k: crash)
    with pytest.raises(SystemExit) as exit_:
        benchmark_snn.run_worker({"kind": "measure"})
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "RuntimeError: out of memory" in err


@pytest.mark.parametrize("call, message", [
    (lambda m, d: m.convert(percentile=150), "percentile: expected a number in (0, 100], got 150"),
    (lambda m, d: m.convert(v_init=float("nan")), "v_init: expected a finite number"),
    (lambda m, d: m.convert(threshold_scale=-1.3), "threshold_scale: expected a number in (0, 1000], got -1.3"),
    (lambda m, d: m.convert(timesteps=-5), "timesteps: expected a number of time steps >= 1"),
    (lambda m, d: m.convert(imgsz=0), "imgsz: expected an image size"),
    (lambda m, d: m.convert(timesteps=100000), "T = 100000 is above 4096"),
    (lambda m, d: m.predict(d["yolo"], timesteps=0), "timesteps: expected a number of time steps >= 1, got 0"),
    (lambda m, d: m.predict(d["yolo"], chunk=-2), "chunk: expected a positive integer"),
    (lambda m, d: m.val(gt_coco=d["coco"]["test"], max_images=0), "max_images: expected a positive integer"),
])
def test_the_python_api_checks_values_as_the_cli_does(trained, call, message):
    from spikedet import SpikingYOLO

    data, weights, _ = trained
    model = SpikingYOLO(weights)
    with pytest.raises(SpikedetError, match=re.escape(message)):
        call(model, data)
