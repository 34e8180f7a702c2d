"""A distillation run that stops and goes on (spikedet.distill.resume), its image sources and its held-out
selection set, on the tiny synthetic darknet of test_distill."""
import json
import os
import signal

import pytest
import torch

import spikedet.distill.loop as run_module
from spikedet.cli import main
from spikedet.distill import distill, kept_path, resume, split_selection, state_path, training_images
from spikedet.errors import Interrupted, SpikedetError

from test_distill import make_files

RECIPE = dict(levels=[4, 8], steps=7, imgsz=32, batch=2, progress=False, feature_weight=1.0, quant_drop=0.5,
              float_share=0.3, selection=2, select_every=3)


@pytest.fixture
def files(tmp_path):
    return make_files(tmp_path)


def _stop_at(monkeypatch, call, signum=signal.SIGINT):
    """Send `signum` to this process during the `call`-th loss: the run finishes that step, saves, stops."""
    calls = {"n": 0}
    real = run_module.head_loss

    def counting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            os.kill(os.getpid(), signum)
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "head_loss", counting)


BINARY = dict(binary_steps=4, burn_in=1, feature_weight=0.0, quant_drop=0.0)  # steps through the binary SNN


@pytest.mark.parametrize("ema, binary", [(0.0, {}), (0.6, {}), (0.6, BINARY)])
def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(files, tmp_path, monkeypatch, ema, binary):
    cfg, weights, names, folder = files
    recipe = {**RECIPE, "ema": ema, **binary}
    whole = distill(weights, cfg, folder, tmp_path / "whole.pt", names=names, **recipe)
    _stop_at(monkeypatch, 3)
    with pytest.raises(Interrupted) as stop:
        distill(weights, cfg, folder, tmp_path / "parts.pt", names=names, **recipe)
    assert stop.value.exit_code == 130 and "step 3 of 7" in str(stop.value)
    state = state_path(tmp_path / "parts.pt")
    assert torch.load(state, weights_only=True)["step"] == 3 and not (tmp_path / "parts.pt").exists()
    monkeypatch.undo()
    parts = resume(state, progress=False)
    a, b = (torch.load(p, weights_only=True) for p in (whole, parts))
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    strip = [{k: v for k, v in e.items() if k != "minutes"} for e in a["distill"]["history"]]
    assert strip == [{k: v for k, v in e.items() if k != "minutes"} for e in b["distill"]["history"]]
    assert a["distill"]["selection_loss"] == b["distill"]["selection_loss"]
    assert set(a["distill"]["selection_loss"]) == {"4", "8", "float"} | ({"binary4"} if binary else set())
    for step in (3, 6):  # the networks kept at the selection points: step 3 before the stop, 6 after it
        kept_a, kept_b = (torch.load(kept_path(p, step), weights_only=True) for p in (whole, parts))
        assert kept_a["distill"]["steps"] == step
        for key in kept_a["state_dict"]:
            assert torch.equal(kept_a["state_dict"][key], kept_b["state_dict"][key]), (step, key)
    assert not kept_path(whole, 7).exists()  # the last step's network is the output itself


def test_with_ema_the_run_measures_and_writes_the_average_of_its_steps(files, tmp_path):
    """ema=d: after each step average <- d * average + (1 - d) * weights; the kept networks and the output are
    the average, the state holds both. Checked from step 6's kept average, step 7's weights and the output."""
    cfg, weights, names, folder = files
    d = 0.6
    out = distill(weights, cfg, folder, tmp_path / "e.pt", names=names, **{**RECIPE, "ema": d})
    state = torch.load(state_path(out), weights_only=True)
    written = torch.load(out, weights_only=True)
    kept = torch.load(kept_path(out, 6), weights_only=True)
    assert written["distill"]["ema"] == d and state["settings"]["ema"] == d
    moved = 0
    for key, last in state["student"].items():
        if not last.is_floating_point() or key.endswith("num_batches_tracked"):
            continue
        average = state["average"]["module." + key]
        assert torch.equal(written["state_dict"][key], average.half()), key
        if "running" not in key:  # parameters are averaged; frozen batch-norm statistics are copies
            expected = d * kept["state_dict"][key].float() + (1 - d) * last
            assert torch.allclose(average, expected, rtol=2e-3, atol=1e-4), key
            moved += not torch.allclose(average, last, rtol=1e-3, atol=1e-5)
    assert moved  # the average is not the last step's weights


def test_the_control_a_different_recipe_ends_elsewhere(files, tmp_path):
    """The equality above is not vacuous: one more step changes the weights."""
    cfg, weights, names, folder = files
    a = distill(weights, cfg, folder, tmp_path / "a.pt", names=names, **RECIPE)
    b = distill(weights, cfg, folder, tmp_path / "b.pt", names=names, **{**RECIPE, "steps": 8})
    sa, sb = (torch.load(p, weights_only=True)["state_dict"] for p in (a, b))
    assert any(not torch.equal(sa[k], sb[k]) for k in sa)


def test_sigterm_stops_with_143_and_a_state(files, tmp_path, monkeypatch):
    cfg, weights, names, folder = files
    _stop_at(monkeypatch, 2, signal.SIGTERM)
    with pytest.raises(Interrupted) as stop:
        distill(weights, cfg, folder, tmp_path / "t.pt", names=names, **RECIPE)
    assert stop.value.exit_code == 143 and torch.load(state_path(tmp_path / "t.pt"), weights_only=True)["step"] == 2


def test_resume_keeps_the_recipe_and_refuses_what_it_cannot_continue(files, tmp_path, monkeypatch):
    cfg, weights, names, folder = files
    _stop_at(monkeypatch, 1)
    with pytest.raises(Interrupted):
        distill(weights, cfg, folder, tmp_path / "r.pt", names=names, **RECIPE)
    monkeypatch.undo()
    state = state_path(tmp_path / "r.pt")
    with pytest.raises(SpikedetError, match="lr cannot change"):
        resume(state, lr=1e-3)
    with pytest.raises(SpikedetError, match="threads"):
        resume(state, threads=0)
    with pytest.raises(SpikedetError, match="exists"):  # a fresh run onto a state: resume it instead
        distill(weights, cfg, folder, tmp_path / "r.pt", names=names, **RECIPE)
    resume(state, progress=False)
    with pytest.raises(SpikedetError, match="has finished"):
        resume(state)
    with pytest.raises(SpikedetError, match="not a distillation state"):
        resume(tmp_path / "r.pt")


def test_resume_checks_the_values_in_its_state_file(files, tmp_path, monkeypatch):
    cfg, weights, names, folder = files
    _stop_at(monkeypatch, 1)
    with pytest.raises(Interrupted):
        distill(weights, cfg, folder, tmp_path / "v.pt", names=names, **RECIPE)
    state = state_path(tmp_path / "v.pt")
    content = torch.load(state, weights_only=True)
    content["settings"]["lr"] = 1e30
    torch.save(content, tmp_path / "bad-lr.last.pt")
    with pytest.raises(SpikedetError, match="bad settings"):
        resume(tmp_path / "bad-lr.last.pt")
    content = torch.load(state, weights_only=True)
    content["settings"]["lambda_only"] = True  # with float steps: a step with nothing to train
    torch.save(content, tmp_path / "bad-lambda.last.pt")
    with pytest.raises(SpikedetError, match="bad settings.*float_share=0"):
        resume(tmp_path / "bad-lambda.last.pt")
    content = torch.load(state, weights_only=True)
    next(iter(content["student"].values())).fill_(float("nan"))
    torch.save(content, tmp_path / "nan.last.pt")
    with pytest.raises(SpikedetError, match="non-finite"):
        resume(tmp_path / "nan.last.pt")
    content = torch.load(state, weights_only=True)
    content["settings"]["ema"] = 0.9  # a run with a weight average, but none in the file
    torch.save(content, tmp_path / "no-average.last.pt")
    with pytest.raises(SpikedetError, match="no-average.last.pt: a run with ema=0.9 whose state holds no weight"):
        resume(tmp_path / "no-average.last.pt")


def test_a_time_budget_ends_the_session_with_a_state_not_a_checkpoint(files, tmp_path):
    cfg, weights, names, folder = files
    out = distill(weights, cfg, folder, tmp_path / "m.pt", names=names, max_minutes=1e-9, **RECIPE)
    assert out == state_path(tmp_path / "m.pt") and torch.load(out, weights_only=True)["step"] == 1
    assert not (tmp_path / "m.pt").exists()


def test_a_non_finite_loss_stops_in_one_line(files, tmp_path, monkeypatch):
    cfg, weights, names, folder = files
    real = run_module.head_loss

    def nan_loss(*args, **kwargs):
        out = real(*args, **kwargs)
        out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(run_module, "head_loss", nan_loss)
    with pytest.raises(SpikedetError, match="loss is nan"):
        distill(weights, cfg, folder, tmp_path / "n.pt", names=names, **RECIPE)
    assert not (tmp_path / "n.pt").exists()


def test_several_sources_and_a_list_file_give_one_sorted_set(files, tmp_path):
    cfg, weights, names, folder = files
    second = tmp_path / "more"
    second.mkdir()
    for k in (0, 1):
        (second / f"x{k}.jpg").write_bytes((folder / f"im{k}.jpg").read_bytes())
    listing = tmp_path / "list.txt"
    listing.write_text("# two of the first folder, one again\nimages/im0.jpg\n\nimages/im1.jpg\nimages/im0.jpg\n")
    paths = training_images([folder, second, listing])
    assert [p.name for p in paths] == [f"im{k}.jpg" for k in range(6)] + ["x0.jpg", "x1.jpg"]
    (tmp_path / "bad.txt").write_text("images/nope.jpg\n")
    with pytest.raises(SpikedetError, match="line 1: images/nope.jpg: image not found"):
        training_images([folder, tmp_path / "bad.txt"])


def test_the_selection_set_is_seeded_disjoint_and_named_in_the_checkpoint(files, tmp_path):
    cfg, weights, names, folder = files
    paths = training_images(folder)
    train, held = split_selection(paths, 2, seed=0)
    assert (train, held) == split_selection(paths, 2, seed=0) and len(held) == 2
    assert not set(train) & set(held) and sorted(train + held) == paths
    assert split_selection(paths, 2, seed=1)[1] != held or split_selection(paths, 2, seed=2)[1] != held
    with pytest.raises(SpikedetError, match="selection=6"):
        split_selection(paths, 6, seed=0)
    out = distill(weights, cfg, folder, tmp_path / "s.pt", names=names, **RECIPE)
    record = torch.load(out, weights_only=True)["distill"]
    assert record["selection_images"] == [str(p) for p in held]
    assert not set(record["image_paths"]) & set(record["selection_images"])
    assert [e["steps"] for e in record["history"] if "selection_loss" in e] == [3, 6, 7]


def test_selection_seed_holds_the_same_images_out_for_another_training_seed(files, tmp_path):
    """Two seeds of one recipe are comparable only on the same selection images: selection_seed fixes them."""
    cfg, weights, names, folder = files
    paths = training_images(folder)
    held = {s: [str(p) for p in split_selection(paths, 2, seed=s)[1]] for s in range(4)}
    other = next(s for s in range(1, 4) if held[s] != held[0])  # a seed whose own draw differs
    recipe = {**RECIPE, "steps": 2, "select_every": 0}
    first = torch.load(distill(weights, cfg, folder, tmp_path / "a.pt", names=names, **recipe), weights_only=True)
    fixed = torch.load(distill(weights, cfg, folder, tmp_path / "b.pt", names=names, seed=other, selection_seed=0,
                               **recipe), weights_only=True)
    own = torch.load(distill(weights, cfg, folder, tmp_path / "c.pt", names=names, seed=other, **recipe),
                     weights_only=True)
    assert first["distill"]["selection_images"] == fixed["distill"]["selection_images"] == held[0]
    assert own["distill"]["selection_images"] == held[other]
    assert (fixed["distill"]["seed"], fixed["distill"]["selection_seed"]) == (other, 0)
    assert any(not torch.equal(first["state_dict"][k], fixed["state_dict"][k]) for k in first["state_dict"])
    distill(weights, cfg, folder, tmp_path / "d.pt", names=names, seed=other, selection_seed=0,
            start=tmp_path / "a.pt", **recipe)
    with pytest.raises(SpikedetError, match="selection_seed="):
        distill(weights, cfg, folder, tmp_path / "e.pt", names=names, seed=other, start=tmp_path / "a.pt", **recipe)
    with pytest.raises(SpikedetError, match="selection_seed=-1"):
        distill(weights, cfg, folder, tmp_path / "f.pt", names=names, selection_seed=-1, **recipe)


def test_selection_from_draws_the_held_out_images_from_one_source_only(files, tmp_path):
    """COCO's bars want COCO-like held-out images: selection_from= draws them from one source while every other
    source is trained on whole; without it the draw is the one of before."""
    cfg, weights, names, folder = files
    second = tmp_path / "more"
    second.mkdir()
    for k in range(4):
        (second / f"x{k}.jpg").write_bytes((folder / f"im{k}.jpg").read_bytes())
    paths, pool = training_images([folder, second]), training_images(second)
    for seed in range(5):
        train, held = split_selection(paths, 2, seed, pool)
        assert len(held) == 2 and set(held) <= set(pool) and sorted(train + held) == paths
        assert set(folder.iterdir()) <= {p for p in train}  # the other source: all trained on
    assert split_selection(paths, 2, 0, None) == split_selection(paths, 2, 0)
    with pytest.raises(SpikedetError, match="selection=4: .* the 4 images"):
        split_selection(paths, 4, 0, pool)
    recipe = {**RECIPE, "steps": 2, "select_every": 0}
    record = torch.load(distill(weights, cfg, [folder, second], tmp_path / "a.pt", names=names,
                                selection_from=second, **recipe), weights_only=True)["distill"]
    assert record["selection_images"] == [str(p) for p in split_selection(paths, 2, 0, pool)[1]]
    assert all(p.startswith(str(second.resolve())) for p in record["selection_images"])
    assert record["selection_from"] == str(second.resolve())
    with pytest.raises(SpikedetError, match="must be one of the image sources"):
        distill(weights, cfg, folder, tmp_path / "b.pt", names=names, selection_from=second, **recipe)
    with pytest.raises(SpikedetError, match="selection_from="):
        distill(weights, cfg, [folder, second], tmp_path / "c.pt", names=names, selection_from=tmp_path / "nope",
                **recipe)


def test_the_command_line_resumes_and_refuses_a_new_recipe(files, tmp_path, monkeypatch, capsys):
    cfg, weights, names, folder = files
    _stop_at(monkeypatch, 2)
    args = ["train", "--distill", "--weights", str(weights), "--cfg", str(cfg), "--names", str(names),
            "--images", str(folder), "--output", str(tmp_path / "c.pt"), "--imgsz", "32", "--batch", "2",
            "--levels", "4", "steps=3"]
    assert main(args) == 130
    assert "interrupted: distillation stopped at step 2 of 3" in capsys.readouterr().err
    monkeypatch.undo()
    state = str(state_path(tmp_path / "c.pt"))
    assert main(["train", "--distill", "--resume", state, "--weights", str(weights)]) == 2
    assert main(["train", "--distill", "--resume", state, "lr=0.1"]) == 2
    assert "lr cannot change" in capsys.readouterr().err
    assert main(["train", "--distill", "--resume", state, "threads=1"]) == 0
    assert (tmp_path / "c.pt").is_file()


def test_an_epochs_logged_loss_is_the_mean_of_its_steps(files, tmp_path, monkeypatch):
    cfg, weights, names, folder = files
    losses, real = [], run_module._step

    def recording(*args, **kwargs):
        out = real(*args, **kwargs)
        losses.append(out["loss"])
        return out

    monkeypatch.setattr(run_module, "_step", recording)
    out = distill(weights, cfg, folder, tmp_path / "e.pt", names=names, **{**RECIPE, "steps": 4, "selection": 0})
    epochs = [e for e in torch.load(out, weights_only=True)["distill"]["history"] if "epoch" in e]
    assert [e["steps"] for e in epochs] == [3, 4]  # 6 images, batch 2: 3 steps per epoch
    assert epochs[0]["loss"] == pytest.approx(sum(losses[:3]) / 3) and epochs[1]["loss"] == pytest.approx(losses[3])


def test_a_resumed_run_goes_on_writing_the_log_it_started_with(files, tmp_path, monkeypatch):
    """Without log= on --resume, the epochs after the stop land in the same log, as in an uninterrupted run."""
    cfg, weights, names, folder = files

    def entries(log):
        return [{k: v for k, v in json.loads(line).items() if k != "minutes"} for line in log.read_text().splitlines()]

    distill(weights, cfg, folder, tmp_path / "whole.pt", names=names, log=tmp_path / "whole.jsonl", **RECIPE)
    _stop_at(monkeypatch, 3)
    with pytest.raises(Interrupted):
        distill(weights, cfg, folder, tmp_path / "parts.pt", names=names, log=tmp_path / "parts.jsonl", **RECIPE)
    monkeypatch.undo()
    assert [e["steps"] for e in entries(tmp_path / "parts.jsonl")] == [2]  # 4 training images, batch 2
    resume(state_path(tmp_path / "parts.pt"), progress=False)
    assert entries(tmp_path / "parts.jsonl") == entries(tmp_path / "whole.jsonl")
    assert [e["steps"] for e in entries(tmp_path / "whole.jsonl")] == [2, 4, 6, 7]


def test_a_state_whose_log_cannot_be_written_asks_for_log(files, tmp_path, monkeypatch, capsys):
    cfg, weights, names, folder = files
    (tmp_path / "logs").mkdir()
    _stop_at(monkeypatch, 2)
    with pytest.raises(Interrupted):
        distill(weights, cfg, folder, tmp_path / "g.pt", names=names, log=tmp_path / "logs" / "g.jsonl", **RECIPE)
    monkeypatch.undo()
    (tmp_path / "logs" / "g.jsonl").unlink()
    (tmp_path / "logs").rmdir()
    state = str(state_path(tmp_path / "g.pt"))
    assert main(["train", "--distill", "--resume", state]) == 2
    err = capsys.readouterr().err
    assert state in err and "give log=FILE" in err and len(err.strip().splitlines()) == 1
    assert main(["train", "--distill", "--resume", state, f"log={tmp_path / 'other.jsonl'}"]) == 0
    assert [json.loads(line)["steps"] for line in (tmp_path / "other.jsonl").read_text().splitlines()] == [4, 6, 7]


def test_distill_loss_scores_a_checkpoint_on_its_selection_images(files, tmp_path, capsys):
    cfg, weights, names, folder = files
    out = distill(weights, cfg, folder, tmp_path / "d.pt", names=names, **RECIPE)
    recorded = torch.load(out, weights_only=True)["distill"]["selection_loss"]
    common = ["distill-loss", "--weights", str(out), "--teacher", str(weights), "--cfg", str(cfg), "--names",
              str(names), "--levels", "4,8", "--imgsz", "32"]
    assert main(common + ["--selection-of", str(out), "--json", str(tmp_path / "s.json")]) == 0
    measured = json.loads((tmp_path / "s.json").read_text())["loss"]
    for key in ("4", "8", "float"):  # the checkpoint is float16, the run scored its float32 weights
        assert measured[key] == pytest.approx(recorded[key], rel=0.02, abs=1e-3)
    assert main(common + ["--images", str(folder), "--json", str(tmp_path / "all.json"), "--teacher-ap"]) == 0
    assert "AP against the teacher's detections (AP50 / AP): L=4: " in capsys.readouterr().out
    scored = json.loads((tmp_path / "all.json").read_text())["teacher_ap"]
    assert set(scored) == {"4", "8", "float"} and all(set(v) == {"AP50", "AP"} for v in scored.values())
    everything = json.loads((tmp_path / "all.json").read_text())["images"]
    assert len(everything) == 6 and everything != json.loads((tmp_path / "s.json").read_text())["images"]
    assert main(common + ["--selection-of", str(weights)]) == 2
    # the network kept at step 3 is the one the run measured there
    at_3 = next(e["selection_loss"] for e in torch.load(out, weights_only=True)["distill"]["history"]
                if e.get("steps") == 3 and "selection_loss" in e)
    kept = ["--weights", str(kept_path(out, 3))] + common[3:]
    assert main(["distill-loss"] + kept + ["--selection-of", str(out), "--json", str(tmp_path / "k.json")]) == 0
    measured = json.loads((tmp_path / "k.json").read_text())["loss"]
    assert measured != json.loads((tmp_path / "s.json").read_text())["loss"]
    for key in ("4", "8", "float"):
        assert measured[key] == pytest.approx(at_3[key], rel=0.02, abs=1e-3)


def test_a_new_run_refuses_an_output_name_whose_kept_networks_exist(files, tmp_path, capsys):
    cfg, weights, names, folder = files
    kept_path(tmp_path / "o.pt", 3).write_bytes(b"an earlier run's")
    with pytest.raises(SpikedetError, match=r"o\.step3\.pt: exists \(a network kept by an earlier run"):
        distill(weights, cfg, folder, tmp_path / "o.pt", names=names, **RECIPE)
    assert not (tmp_path / "o.pt").exists() and not state_path(tmp_path / "o.pt").exists()


def test_the_device_is_checked_and_an_explicit_cpu_changes_nothing(files, tmp_path):
    cfg, weights, names, folder = files
    recipe = {**RECIPE, "steps": 2, "selection": 0}
    a = distill(weights, cfg, folder, tmp_path / "a.pt", names=names, **recipe)
    b = distill(weights, cfg, folder, tmp_path / "b.pt", names=names, device="cpu", **recipe)
    sa, sb = (torch.load(p, weights_only=True)["state_dict"] for p in (a, b))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    with pytest.raises(SpikedetError, match="device='gpu'"):
        distill(weights, cfg, folder, tmp_path / "c.pt", names=names, device="gpu", **recipe)
    if not torch.cuda.is_available():
        with pytest.raises(SpikedetError, match="device='cuda'"):
            distill(weights, cfg, folder, tmp_path / "c.pt", names=names, device="cuda", **recipe)


def test_the_step_benchmark_times_every_phase(files, tmp_path):
    import importlib.util
    from pathlib import Path

    cfg, weights, names, folder = files
    spec = importlib.util.spec_from_file_location("benchmark_distill",
                                                  Path(__file__).parents[1] / "tools" / "benchmark_distill.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--weights", str(weights), "--cfg", str(cfg), "--images", str(folder), "--imgsz", "32", "--batch",
                "2", "--steps", "2", "--threads", "1", "--json", str(tmp_path / "b.json")])
    result = json.loads((tmp_path / "b.json").read_text())
    assert all(result[k] > 0 for k in ("load", "teacher", "student", "backward"))
    assert result["step"] == pytest.approx(sum(result[k] for k in ("load", "teacher", "student", "backward")))
