"""Darknet weights decoded with the [yolo] anchors they were trained with (spikedet.darknet.known): a known
weights file with other anchors is refused in one line, a network distilled from it is mended by fix-anchors."""
import hashlib
import re

import pytest
import torch

from spikedet.cli import main
from spikedet.darknet import load_darknet
from spikedet.darknet import known
from spikedet.darknet.known import KnownWeights, teacher_sha256, with_known_anchors, yolo_anchors
from spikedet.distill import distill
from spikedet.errors import SpikedetError
from spikedet.model.checkpoint import load_ann

from conftest import SHARED_DATA, YOLOV3_TINY_CFG, needs_real_data
from test_distill import make_files

# tiny_cfg's anchors: 4,6, 8,8, 12,10, 16,20, 24,24, 30,28; its [yolo] masks 3,4,5 and 0,1,2
TRAINED = KnownWeights(name="the test's weights", anchors=(((16.0, 20.0), (24.0, 24.0), (30.0, 28.0)),
                                                           ((8.0, 8.0), (12.0, 10.0), (16.0, 20.0))),
                       masks=((3, 4, 5), (1, 2, 3)), fixed_cfg="configs/the-right.cfg")


@pytest.fixture
def files(tmp_path):
    return make_files(tmp_path)


def knowing(monkeypatch, weights):
    """Make the test's random weights a known file, trained with masks 3,4,5 and 1,2,3."""
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    monkeypatch.setitem(known.KNOWN, sha, TRAINED)
    return sha


def test_known_weights_with_other_anchors_are_refused_naming_the_cfg(files, tmp_path, monkeypatch):
    cfg, weights, names, _ = files
    assert yolo_anchors(load_darknet(cfg, weights, names)) != list(TRAINED.anchors)  # unknown weights: no check
    sha = knowing(monkeypatch, weights)
    with pytest.raises(SpikedetError) as refused:
        load_darknet(cfg, weights, names)
    message = str(refused.value)
    assert message.startswith(f"{cfg}: ") and "masks 3,4,5 and 1,2,3" in message and "\n" not in message
    assert message.endswith("use configs/the-right.cfg from spikedet's repository")
    right = tmp_path / "right.cfg"
    right.write_text(with_known_anchors(cfg.read_text(), sha))
    assert yolo_anchors(load_darknet(right, weights, names)) == list(TRAINED.anchors)


def test_with_known_anchors_changes_the_mask_lines_only(files, monkeypatch):
    cfg, weights, _, _ = files
    sha = knowing(monkeypatch, weights)
    text = cfg.read_text().replace("\n", "\r\n").replace("mask=0,1,2", "mask = 0, 1, 2")
    mended = with_known_anchors(text, sha)
    changed = [(a, b) for a, b in zip(text.splitlines(True), mended.splitlines(True)) if a != b]
    assert changed == [("mask=3,4,5\r\n", "mask = 3,4,5\r\n"), ("mask = 0, 1, 2\r\n", "mask = 1,2,3\r\n")]
    assert len(text.splitlines(True)) == len(mended.splitlines(True))


def test_fix_anchors_mends_a_distilled_network_and_nothing_else(files, tmp_path, monkeypatch, capsys):
    cfg, weights, names, folder = files
    old = distill(weights, cfg, folder, tmp_path / "old.pt", levels=4, steps=2, imgsz=32, batch=2, names=names,
                  progress=False)
    knowing(monkeypatch, weights)
    with pytest.raises(SpikedetError, match=re.escape(f"{old}: decodes the test's weights with other [yolo] anchors")
                       + ".*" + re.escape(f"mend it: python tools/fix_anchors.py --weights {old} --output NEW.pt")):
        load_ann(old)
    new = tmp_path / "new.pt"
    assert main(["fix-anchors", "--weights", str(old), "--output", str(new)]) == 0
    assert str(new) in capsys.readouterr().out
    assert yolo_anchors(load_ann(new)) == list(TRAINED.anchors)
    before, after = (torch.load(f, weights_only=True) for f in (old, new))
    assert before["state_dict"].keys() == after["state_dict"].keys()
    assert all(torch.equal(before["state_dict"][k], after["state_dict"][k]) for k in before["state_dict"])
    assert set(after) == set(before) | {"anchors_mended"}
    assert after["distill"] == before["distill"] and after["names"] == before["names"]
    assert {k: v for k, v in after["config"].items() if k != "cfg_text"} == \
        {k: v for k, v in before["config"].items() if k != "cfg_text"}
    lines = (before["config"]["cfg_text"].splitlines(), after["config"]["cfg_text"].splitlines())
    changed = [(a, b) for a, b in zip(*lines) if a != b]
    assert changed == [("mask=3,4,5", "mask = 3,4,5"), ("mask=0,1,2", "mask = 1,2,3")]
    assert after["anchors_mended"]["masks"] == [[3, 4, 5], [1, 2, 3]]
    for args, problem in ((["--weights", str(new), "--output", str(tmp_path / "again.pt")], "nothing to mend"),
                          (["--weights", str(old), "--output", str(new)], "already exists")):
        assert main(["fix-anchors", *args]) == 2
        err = capsys.readouterr().err
        assert problem in err and "Traceback" not in err
    assert not (tmp_path / "again.pt").exists()


def test_fix_anchors_refuses_a_network_of_unknown_weights(files, tmp_path, capsys):
    cfg, weights, names, folder = files
    out = distill(weights, cfg, folder, tmp_path / "d.pt", levels=4, steps=1, imgsz=32, batch=2, names=names,
                  progress=False)
    assert main(["fix-anchors", "--weights", str(out), "--output", str(tmp_path / "n.pt")]) == 2
    assert "whose anchors spikedet knows: nothing to mend" in capsys.readouterr().err
    assert not (tmp_path / "n.pt").exists()


@needs_real_data
def test_the_staged_yolov3_tiny_cfg_is_refused_and_the_repositorys_differs_only_in_its_mask():
    staged = SHARED_DATA / "weights" / "yolov3-tiny.cfg"
    with pytest.raises(SpikedetError, match=re.escape(f"{staged}: decodes pjreddie's yolov3-tiny.weights")):
        load_darknet(staged, SHARED_DATA / "weights" / "yolov3-tiny.weights")
    ours, theirs = ([line for line in f.read_text().splitlines() if not line.startswith("#")]
                    for f in (YOLOV3_TINY_CFG, staged))  # ours says why in three comment lines
    assert [(a, b) for a, b in zip(theirs, ours) if a != b] == [("mask = 0,1,2", "mask = 1,2,3")]
    assert len(ours) == len(theirs)


def test_the_shipped_network_decodes_with_the_anchors_its_teacher_was_trained_with():
    shipped = YOLOV3_TINY_CFG.parents[2] / "weights" / "yolov3-tiny-coco-de.pt"
    content = torch.load(shipped, weights_only=True)
    assert teacher_sha256(content) in known.KNOWN
    assert yolo_anchors(load_ann(shipped, content)) == list(known.KNOWN[teacher_sha256(content)].anchors)
