"""Averaging distilled networks (spikedet.distill.average, `spikedet average`): the mean of fine-tunes of one
start, a candidate the selection rule accepts; files that cannot be averaged are refused in one line."""
import copy
import shutil

import pytest
import torch

from spikedet.cli import main
from spikedet.distill import distill, sha256
from spikedet.distill.average import average_checkpoints
from spikedet.distill.choose import check_same_selection, run_record
from spikedet.errors import SpikedetError
from spikedet.model.checkpoint import load_ann

from test_distill import make_files
from test_distill_resume import RECIPE

RUN = {**RECIPE, "steps": 2, "select_every": 0}


@pytest.fixture
def runs(tmp_path):
    """A start file and two seeds fine-tuned from it on the same held-out images."""
    cfg, weights, names, folder = make_files(tmp_path)
    start = distill(weights, cfg, folder, tmp_path / "a.pt", names=names, **RUN)
    seeds = [distill(weights, cfg, folder, tmp_path / f"s{seed}.pt", names=names, seed=seed, selection_seed=0,
                     start=start, **RUN) for seed in (1, 2)]
    return cfg, weights, names, folder, start, seeds


def _read(paths):
    return [torch.load(p, weights_only=True) for p in paths]


def test_the_average_is_the_mean_of_the_weights_and_a_candidate_the_rule_accepts(runs, tmp_path, capsys):
    *_, start, seeds = runs
    out = tmp_path / "y.pt"
    assert main(["average", *map(str, seeds), "--output", str(out)]) == 0
    assert f"averaged 2 networks (4 steps in all): {out}" in capsys.readouterr().out
    one, two, mean = _read([*seeds, out])
    differ = 0
    for name, tensor in mean["state_dict"].items():
        a, b = one["state_dict"][name], two["state_dict"][name]
        assert tensor.dtype == a.dtype
        if a.is_floating_point():
            torch.testing.assert_close(tensor, ((a.double() + b.double()) / 2).to(a.dtype), rtol=0, atol=0)
            differ += not torch.equal(a, b)
        else:
            assert torch.equal(tensor, a)
    assert differ > 0  # the two seeds trained differently, so the mean is a third network
    record = mean["distill"]
    assert record["steps"] == 4 and record["start"]["sha256"] == sha256(start)
    assert [(e["sha256"], e["steps"]) for e in record["average"]] == [(sha256(p), 2) for p in seeds]
    assert "seed" not in record and "history" not in record  # what the files disagree on is not claimed
    assert record["selection_images"] == one["distill"]["selection_images"]
    assert set(record["image_paths"]) == set(one["distill"]["image_paths"]) | set(two["distill"]["image_paths"])
    load_ann(out, mean)
    check_same_selection(out, run_record(out, mean), seeds[0], run_record(seeds[0], one))


def test_a_file_averaged_with_its_copy_is_itself(runs, tmp_path):
    *_, seeds = runs
    copy_path = tmp_path / "copy.pt"
    shutil.copy(seeds[0], copy_path)
    contents = _read([seeds[0], copy_path])
    mean = average_checkpoints([seeds[0], copy_path], contents, ["x", "x"])
    assert all(torch.equal(mean["state_dict"][k], v) for k, v in contents[0]["state_dict"].items())


def test_files_that_cannot_be_averaged_are_refused_naming_the_file(runs, tmp_path, capsys):
    cfg, weights, names, folder, start, seeds = runs
    out = tmp_path / "y.pt"
    other_start = distill(weights, cfg, folder, tmp_path / "o.pt", names=names, seed=3, selection_seed=0,
                          start=seeds[0], **RUN)
    assert main(["average", str(seeds[0]), str(other_start), "--output", str(out)]) == 2
    assert f"{other_start}: has another start file than {seeds[0]}" in capsys.readouterr().err
    assert main(["average", str(seeds[0]), str(seeds[0]), "--output", str(out)]) == 2
    assert "named twice" in capsys.readouterr().err
    assert main(["average", str(start), str(seeds[0]), "--output", str(out)]) == 2  # a run without start=
    assert f"{start}: names no start file" in capsys.readouterr().err
    assert not out.exists()
    out.write_bytes(b"kept")
    assert main(["average", *map(str, seeds), "--output", str(out)]) == 2
    assert out.read_bytes() == b"kept"

    contents = _read(seeds)
    held = copy.deepcopy(contents[1])
    held["distill"]["selection_images"] = held["distill"]["image_paths"][:2]
    with pytest.raises(SpikedetError, match="s2.pt: holds out other selection images"):
        average_checkpoints(seeds, [contents[0], held], ["a", "b"])
    leaked = copy.deepcopy(contents[1])
    leaked["distill"]["image_paths"] += contents[0]["distill"]["selection_images"][:1]
    with pytest.raises(SpikedetError, match="s2.pt: trained on 1 of the selection images"):
        average_checkpoints(seeds, [contents[0], leaked], ["a", "b"])
    counted = copy.deepcopy(contents[1])
    name = next(k for k, v in counted["state_dict"].items() if not v.is_floating_point())
    counted["state_dict"][name] += 1
    with pytest.raises(SpikedetError, match=f"tensor {name} .* cannot be averaged"):
        average_checkpoints(seeds, [contents[0], counted], ["a", "b"])
    shaped = copy.deepcopy(contents[1])
    name = next(iter(shaped["state_dict"]))
    shaped["state_dict"][name] = shaped["state_dict"][name][:1]
    with pytest.raises(SpikedetError, match=f"tensor {name} differs in shape"):
        average_checkpoints(seeds, [contents[0], shaped], ["a", "b"])
    with pytest.raises(SpikedetError, match="at least two"):
        average_checkpoints(seeds[:1], contents[:1], ["a"])
