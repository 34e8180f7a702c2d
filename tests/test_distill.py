"""Dual-error distillation of a darknet network (spikedet.distill), on a tiny synthetic darknet."""
import cv2
import numpy as np
import pytest
import torch

from spikedet.darknet import DarknetModel, load_darknet
from spikedet.distill import (DistillImages, QuantDrop, channel_scales, distill, head_loss, leaky_activations,
                              load_batch, make_student, mean_head_loss, mse_scales, set_levels, training_images)
from spikedet.errors import SpikedetError
from spikedet.model.activation import DualErrorLeakyReLU, DualErrorSettings
from spikedet.model.checkpoint import load_ann
from spikedet.snn import convert
from spikedet.snn.neurons import BurstNeuron, Static

from conftest import randomize, write_weights

NC = 2


def tiny_cfg(nc=NC):
    """yolov3-tiny's layout (conv/pool backbone, two [yolo] levels, a route, an upsample, a concat) at 32 px."""
    def conv(filters, size=3, bn=1, activation="leaky", stride=1):
        return (f"[convolutional]\nbatch_normalize={bn}\nfilters={filters}\nsize={size}\nstride={stride}\npad=1\n"
                f"activation={activation}\n\n")

    def yolo(mask):
        return (f"[yolo]\nmask={mask}\nanchors=4,6, 8,8, 12,10, 16,20, 24,24, 30,28\nclasses={nc}\nnum=6\n\n")

    out = 3 * (5 + nc)
    return ("[net]\nwidth=32\nheight=32\nchannels=3\n\n"
            + conv(4) + "[maxpool]\nsize=2\nstride=2\n\n"          # 0, 1
            + conv(8) + "[maxpool]\nsize=2\nstride=2\n\n"          # 2, 3
            + conv(8) + "[maxpool]\nsize=2\nstride=2\n\n"          # 4, 5
            + conv(12) + conv(out, 1, 0, "linear") + yolo("3,4,5")  # 6, 7, 8
            + "[route]\nlayers=-3\n\n" + conv(6, 1)                # 9, 10
            + "[upsample]\nstride=2\n\n[route]\nlayers=-1, 4\n\n"  # 11, 12
            + conv(8) + conv(out, 1, 0, "linear") + yolo("0,1,2"))  # 13, 14, 15


@pytest.fixture
def files(tmp_path):
    return make_files(tmp_path)


def teacher_and_student(tmp_path, levels=4):
    """make_files' teacher, a student of it at `levels` (thresholds from its activations), the images and files."""
    cfg, weights, names, folder = make_files(tmp_path)
    teacher = load_darknet(cfg, weights, names).eval()
    paths = training_images(folder)
    student = make_student(teacher, levels, channel_scales(teacher, load_batch(paths, 32))).eval()
    return teacher, student, paths, (cfg, weights, names, folder)


def make_files(tmp_path):
    """A tiny darknet cfg, random weights, names and six small images."""
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(tiny_cfg())
    names = tmp_path / "tiny.names"
    names.write_text("cat\ndog\n")
    weights = write_weights(randomize(DarknetModel(cfg), seed=1), tmp_path / "tiny.weights")
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(6):
        image = (rng.random((40 + 4 * k, 48, 3)) * 255).astype(np.uint8)
        cv2.rectangle(image, (5 + k, 6), (30, 25 + k), (20 * k, 200, 90), -1)
        cv2.imwrite(str(folder / f"im{k}.jpg"), image)
    return cfg, weights, names, folder


def test_loss_decreases_on_a_fixed_batch(files):
    cfg, weights, names, folder = files
    torch.manual_seed(0)
    teacher = load_darknet(cfg, weights, names)
    x = load_batch(training_images(folder), 32)
    student = make_student(teacher, 4, channel_scales(teacher, x))
    student.eval()
    opt = torch.optim.Adam([{"params": [p for n, p in student.named_parameters() if n.endswith(".lam")], "lr": 1e-2},
                            {"params": [p for n, p in student.named_parameters() if not n.endswith(".lam")],
                             "lr": 1e-3}])
    with torch.no_grad():
        t_maps = teacher(x)[1]
    losses = []
    for _ in range(25):
        loss = head_loss(student(x)[1], t_maps, teacher.nc)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[0] > 0
    assert losses[-1] < 0.7 * losses[0], losses


def test_head_loss_is_zero_only_when_student_equals_teacher(files):
    cfg, weights, names, _ = files
    teacher = load_darknet(cfg, weights, names)
    maps = teacher(torch.rand(2, 3, 32, 32))[1]
    same = head_loss(maps, maps, teacher.nc)
    assert abs(float(same["loss"].detach())) < 1e-5
    moved = head_loss([m + 0.3 for m in maps], maps, teacher.nc)
    assert moved["obj"] > 1e-4 and moved["box"] > 1e-4 and moved["cls"] > 1e-4


def test_distill_writes_a_checkpoint_that_converts_without_calibration(files, tmp_path):
    cfg, weights, names, folder = files
    out = distill(weights, cfg, folder, tmp_path / "de.pt", levels=4, epochs=2, imgsz=32, batch=3,
                  names=names, progress=False, feature_weight=1.0)
    content = torch.load(out, weights_only=True)
    record = content["distill"]
    assert record["images"] == [f"im{k}.jpg" for k in range(6)]
    assert record["levels"] == 4 and record["steps"] == 4 and not record["lambda_only"]
    assert content["config"]["dual_error"]["levels"] == 4
    model = load_ann(out)
    acts = [m for m in model.modules() if isinstance(m, DualErrorLeakyReLU)]
    assert len(acts) == 6 and all(a.settings.levels == 4 for a in acts)
    assert list(model.names.values()) == ["cat", "dog"]
    x = load_batch(training_images(folder), 32)
    snn = convert(model, spikes="burst")  # learned lam: no calibration images
    with torch.no_grad():
        ann = model(x)[0]
        for T in (4, 7):
            stepped = snn.simulate(x, [T], method="steps")[T]
            expected = set_levels(model, T)(x)[0]
            assert torch.allclose(stepped, expected, atol=1e-4, rtol=1e-4), (T, (stepped - expected).abs().max())
        set_levels(model, 4)
    assert torch.allclose(snn.simulate(x, [4], method="steps")[4], ann, atol=1e-4, rtol=1e-4)


def test_mse_init_fits_the_levels_better_than_a_high_percentile(files):
    cfg, weights, names, folder = files
    teacher = load_darknet(cfg, weights, names)
    x = load_batch(training_images(folder), 32)
    feats = []
    hooks = [a.register_forward_hook(lambda m, i, o: feats.append(o)) for a in leaky_activations(teacher)]
    with torch.no_grad():
        teacher(x)
    for h in hooks:
        h.remove()

    def error(scales, levels):  # the dual-error units' squared error against the float activations
        unit = DualErrorLeakyReLU(1, DualErrorSettings(levels=1), 0.1)
        total = 0.0
        for z, lam in zip(feats, scales):
            for L in levels:
                unit.settings = DualErrorSettings(levels=L)
                unit.lam = torch.nn.Parameter(lam)
                with torch.no_grad():  # the unit applies leaky_relu itself: z >= 0 stays, z < 0 is x / 10 -> x
                    y = unit(torch.where(z >= 0, z, z * 10))
                total += float((y - z).pow(2).mean())
        return total

    percentile = channel_scales(teacher, x)
    for levels in ([2], [4, 8]):
        best = mse_scales(teacher, x, levels, samples=10 ** 6)  # every activation kept: an exact search
        assert all(bool((lam > 0).all()) for lam in best)
        assert error(best, levels) < error(percentile, levels)


def test_several_levels_are_drawn_and_the_checkpoint_keeps_the_smallest(files, tmp_path):
    cfg, weights, names, folder = files
    out = distill(weights, cfg, folder, tmp_path / "multi.pt", levels=[8, 4], epochs=1, imgsz=32, batch=3,
                  names=names, progress=False)
    content = torch.load(out, weights_only=True)
    assert content["distill"]["train_levels"] == [4, 8] and content["distill"]["levels"] == 4
    assert content["distill"]["init"] == "mse"
    assert content["config"]["dual_error"]["levels"] == 4
    assert all(a.settings.levels == 4 for a in leaky_activations(load_ann(out)))
    with pytest.raises(SpikedetError, match="init"):
        distill(weights, cfg, folder, tmp_path / "x.pt", imgsz=32, progress=False, names=names, init="max")


def test_float_steps_distill_the_students_float_network(files, tmp_path):
    """set_levels(None) switches both errors off: a fresh student's float network is its teacher exactly; a run
    with float_share records it and ends with the errors back on at the smallest level."""
    cfg, weights, names, folder = files
    teacher = load_darknet(cfg, weights, names).eval()
    x = load_batch(training_images(folder), 32)
    student = make_student(teacher, 4, channel_scales(teacher, x)).eval()
    with torch.no_grad():
        quantized = student(x)[0]
        assert torch.equal(set_levels(student, None)(x)[0], teacher(x)[0])
        assert not torch.equal(quantized, teacher(x)[0])
        assert torch.equal(set_levels(student, 4)(x)[0], quantized)
    out = distill(weights, cfg, folder, tmp_path / "f.pt", levels=4, epochs=2, imgsz=32, batch=3, names=names,
                  progress=False, float_share=0.5)
    content = torch.load(out, weights_only=True)
    assert content["distill"]["float_share"] == 0.5
    assert content["config"]["dual_error"]["clip"] and content["config"]["dual_error"]["quantize"]
    assert all(a.settings.clip and a.settings.quantize for a in leaky_activations(load_ann(out)))
    with pytest.raises(SpikedetError, match="float_share=1"):
        distill(weights, cfg, folder, tmp_path / "y.pt", imgsz=32, progress=False, names=names, float_share=1)


def test_quant_drop_passes_the_float_value_at_a_share_of_the_elements(files, tmp_path):
    """Under QuantDrop every unit's element is either its exact leaky value or its dual-error value, the exact
    ones about the share asked, the gradient reaching the weights through both; removed, the student is the
    dual-error network again, and float steps pass through. A run records quant_drop; 1 is refused."""
    cfg, weights, names, folder = files
    teacher = load_darknet(cfg, weights, names).eval()
    x = load_batch(training_images(folder), 32)
    student = make_student(teacher, 2, channel_scales(teacher, x)).eval()
    act = leaky_activations(student)[0]
    z = torch.randn(4, act.lam.numel(), 16, 16) * 3
    exact, quantized = torch.nn.functional.leaky_relu(z, act.negative_slope), act(z)
    differ = exact != quantized
    torch.manual_seed(0)
    dropout = QuantDrop(leaky_activations(student), 0.3)
    mixed = act(z)
    assert torch.equal(mixed[~differ], exact[~differ])
    from_exact = mixed[differ] == exact[differ]
    assert torch.equal(mixed[differ][~from_exact], quantized[differ][~from_exact])
    assert abs(from_exact.float().mean().item() - 0.3) < 0.03, from_exact.float().mean()
    with torch.no_grad():
        reference = student(x)[0]
    student(x)[0].sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in act.parameters())
    set_levels(student, None)
    with torch.no_grad():
        assert torch.equal(student(x)[0], teacher(x)[0])
    dropout.remove()
    set_levels(student, 2)
    with torch.no_grad():
        assert torch.equal(act(z), quantized) and not torch.equal(student(x)[0], reference)
    out = distill(weights, cfg, folder, tmp_path / "q.pt", levels=4, epochs=1, imgsz=32, batch=3, names=names,
                  progress=False, quant_drop=0.5)
    assert torch.load(out, weights_only=True)["distill"]["quant_drop"] == 0.5
    with pytest.raises(SpikedetError, match="quant_drop=1"):
        distill(weights, cfg, folder, tmp_path / "r.pt", imgsz=32, progress=False, names=names, quant_drop=1)


def test_mean_head_loss_is_zero_for_the_teacher_and_the_batch_loss_in_one_batch(files):
    cfg, weights, names, folder = files
    teacher = load_darknet(cfg, weights, names).eval()
    paths = training_images(folder)
    x = load_batch(paths, 32)
    student = make_student(teacher, 2, channel_scales(teacher, x)).eval()
    assert all(abs(v) < 1e-6 for v in mean_head_loss(teacher, teacher, paths, 32, batch=4).values())
    whole = mean_head_loss(student, teacher, paths, 32, batch=len(paths))
    with torch.no_grad():
        reference = head_loss(student(x)[1], teacher(x)[1], NC)
    assert whole["loss"] == pytest.approx(float(reference["loss"]), rel=1e-6) and whole["loss"] > 0
    assert all(whole[k] == pytest.approx(reference[k], rel=1e-6) for k in ("obj", "box", "cls"))
    halves = [mean_head_loss(student, teacher, part, 32, batch=3) for part in (paths[:3], paths[3:])]
    chunked = mean_head_loss(student, teacher, paths, 32, batch=3)
    assert chunked["loss"] == pytest.approx((halves[0]["loss"] + halves[1]["loss"]) / 2, rel=1e-6)
    with pytest.raises(SpikedetError, match="no images"):
        mean_head_loss(student, teacher, [], 32)


def test_distill_is_deterministic_given_seed(files, tmp_path):
    cfg, weights, names, folder = files
    kw = dict(levels=4, epochs=1, imgsz=32, batch=3, names=names, progress=False, seed=3)
    a = torch.load(distill(weights, cfg, folder, tmp_path / "a.pt", **kw), weights_only=True)["state_dict"]
    b = torch.load(distill(weights, cfg, folder, tmp_path / "b.pt", **kw), weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_lambda_only_changes_only_thresholds(files, tmp_path):
    cfg, weights, names, folder = files
    out = distill(weights, cfg, folder, tmp_path / "lam.pt", levels=4, epochs=2, imgsz=32, batch=3, names=names,
                  progress=False, lambda_only=True, lam_lr=5e-2)
    state = torch.load(out, weights_only=True)["state_dict"]
    teacher = load_darknet(cfg, weights, names)
    reference = {k: v.half() if v.is_floating_point() else v for k, v in teacher.state_dict().items()}
    lam_keys = [k for k in state if k.endswith(".lam")]
    assert len(lam_keys) == 6
    for k, v in reference.items():
        assert torch.equal(state[k], v), k
    initial = mse_scales(teacher, load_batch(training_images(folder), 32), [4])
    assert any(not torch.allclose(state[k].float(), lam.half().float()) for k, lam in zip(lam_keys, initial))


def test_lambda_only_with_float_steps_is_refused_in_one_line(files, tmp_path, capsys):
    """A float step uses no threshold, so with only the thresholds trained it has nothing to train: refused before
    the run starts, not a traceback at the first float step."""
    cfg, weights, names, folder = files
    from spikedet.cli import main

    assert main(["train", "--distill", "--weights", str(weights), "--cfg", str(cfg), "--images", str(folder),
                 "--imgsz", "32", "--batch", "2", "--levels", "4", "--output", str(tmp_path / "x.pt"), "--lambda-only",
                 "steps=2", "float_share=0.5"]) == 2
    err = capsys.readouterr().err
    assert "give float_share=0" in err and "Traceback" not in err and not (tmp_path / "x.pt").exists()


def test_dual_error_leaky_unit_is_the_burst_neuron_count():
    torch.manual_seed(0)
    L = 8
    lam = torch.rand(5) * 2 + 0.5
    unit = DualErrorLeakyReLU(5, DualErrorSettings(levels=L, granularity="channel"), 0.1)
    with torch.no_grad():
        unit.lam.copy_(lam)
    currents = torch.randn(L, 3, 5, 4, 4) * 1.5  # a time-varying input, in units of lam per step
    neuron = BurstNeuron(0.5, "subtract", negative_slope=0.1)
    net = neuron(currents).sum(0)
    x = currents.sum(0) / L * lam.view(1, -1, 1, 1)  # the mean input current, in activation units
    expected = unit(x)
    got = net * lam.view(1, -1, 1, 1) / L
    scaled = x * L / lam.view(1, -1, 1, 1)
    leaky = torch.where(scaled >= 0, scaled, 0.1 * scaled)
    boundary = ((leaky + 0.5) - torch.round(leaky + 0.5)).abs() < 1e-4  # float rounding at a level boundary
    assert (~boundary).sum() > 200
    assert torch.allclose(got[~boundary], expected[~boundary], atol=1e-5)
    assert got.abs().max() <= lam.max() + 1e-6 and (got < 0).any() and (got > 0).any()
    # and the constant-current case, every step the same input
    neuron.reset()
    const = neuron(Static(currents[0], L)).sum(0)
    x0 = currents[0] * lam.view(1, -1, 1, 1)
    c = currents[0] * L
    c = torch.where(c >= 0, c, 0.1 * c) + 0.5
    ok = (c - torch.round(c)).abs() > 1e-4
    assert torch.allclose((const * lam.view(1, -1, 1, 1) / L)[ok], unit(x0)[ok], atol=1e-5)


def test_augmentation_gives_imgsz_crops_and_bad_inputs_fail(files, tmp_path):
    cfg, weights, names, folder = files
    data = DistillImages(training_images(folder), 32, seed=0)
    a, b = data[0], data[0]
    assert a.shape == (3, 32, 32) and torch.equal(a, b) and 0 <= float(a.min()) and float(a.max()) <= 1
    data.epoch = 1
    assert not torch.equal(a, data[0])
    # mosaics and blends of plain-coloured images: a crop stays one colour, a mosaic or blend does not
    plain = tmp_path / "plain"
    plain.mkdir()
    for k in range(6):
        cv2.imwrite(str(plain / f"c{k}.png"), np.full((40, 48, 3), (40 * k, 255 - 40 * k, 90), np.uint8))
    crops = DistillImages(training_images(plain), 32, seed=0, augment="crop")
    mixed = DistillImages(training_images(plain), 32, seed=0, augment="mosaic_mixup")
    spread = lambda x: float((x.amax((1, 2)) - x.amin((1, 2))).max())  # noqa: E731
    samples = []
    for epoch in range(4):
        mixed.epoch = epoch
        samples += [mixed[i] for i in range(len(mixed))]
    assert all(spread(crops[i]) < 0.02 for i in range(len(crops)))
    assert sum(spread(m) > 0.1 for m in samples) >= 4
    assert all(m.shape == (3, 32, 32) and 0 <= float(m.min()) and float(m.max()) <= 1 for m in samples)
    mixed.epoch = 2
    assert torch.equal(mixed[1], mixed[1])
    with pytest.raises(SpikedetError, match="augment must be one of"):
        DistillImages(training_images(folder), 32, augment="cutout")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SpikedetError, match="no training images"):
        distill(weights, cfg, empty, tmp_path / "x.pt", imgsz=32, progress=False)
    with pytest.raises(SpikedetError, match="not found"):
        distill(weights, cfg, tmp_path / "missing", tmp_path / "x.pt", imgsz=32, progress=False)
    with pytest.raises(SpikedetError, match="multiple"):
        distill(weights, cfg, folder, tmp_path / "x.pt", imgsz=36, progress=False, names=names)
    assert len(leaky_activations(load_darknet(cfg, weights, names))) == 6


@pytest.mark.parametrize("option, message", [("foo=1", "takes no option 'foo'"), ("lr=abc", "lr='abc'"),
                                             ("lr=-1", "lr=-1"), ("threads=1.5", "threads=1.5"),
                                             ("max_minutes=.nan", "max_minutes=nan")])
def test_distill_options_on_the_command_line_fail_in_one_line(files, tmp_path, capsys, option, message):
    from spikedet.cli import main

    cfg, weights, names, folder = files
    code = main(["train", "--distill", "--weights", str(weights), "--cfg", str(cfg), "--names", str(names),
                 "--images", str(folder), "--output", str(tmp_path / "x.pt"), "--imgsz", "32", option])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "x.pt").exists()


def test_distill_takes_numbers_written_as_yaml_reads_them(files, tmp_path):
    from spikedet.cli import main

    cfg, weights, names, folder = files
    out = tmp_path / "x.pt"
    assert main(["train", "--distill", "--weights", str(weights), "--cfg", str(cfg), "--names", str(names),
                 "--images", str(folder), "--output", str(out), "--imgsz", "32", "--epochs", "1", "--batch", "3",
                 "--levels", "4,8", "lr=1e-5", "feature_weight=2"]) == 0
    record = torch.load(out, weights_only=True)["distill"]
    assert record["lr"] == 1e-5 and record["feature_weight"] == 2.0 and record["train_levels"] == [4, 8]


def test_start_continues_from_a_distilled_checkpoint(files, tmp_path):
    """start=: the student begins where the checkpoint ended (with a vanishing learning rate it stays there,
    where a run from the teacher stays at the teacher), the record names it; another teacher's checkpoint, and
    one whose selection images this run would train on, are refused."""
    cfg, weights, names, folder = files
    kw = dict(levels=4, imgsz=32, batch=3, names=names, progress=False)
    first = distill(weights, cfg, folder, tmp_path / "first.pt", steps=4, lr=5e-2, lam_lr=5e-2, selection=2, **kw)
    tiny = dict(steps=1, lr=1e-12, lam_lr=1e-12, selection=2)
    went_on = distill(weights, cfg, folder, tmp_path / "on.pt", start=first, **tiny, **kw)
    fresh = distill(weights, cfg, folder, tmp_path / "fresh.pt", **tiny, **kw)
    a, b, c = (torch.load(p, weights_only=True) for p in (first, went_on, fresh))
    moved = [k for k in a["state_dict"] if a["state_dict"][k].is_floating_point()
             and not torch.equal(a["state_dict"][k], c["state_dict"][k])]
    assert moved  # the first run changed the network
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in moved)
    assert b["distill"]["start"]["file"] == str(first.resolve()) and c["distill"]["start"] is None

    other = tmp_path / "other"
    other.mkdir()
    other_weights = write_weights(randomize(DarknetModel(cfg), seed=7), other / "tiny.weights")
    with pytest.raises(SpikedetError, match="another teacher"):
        distill(other_weights, cfg, folder, tmp_path / "x.pt", start=first, **tiny, **kw)
    with pytest.raises(SpikedetError, match="selection images would be trained on"):
        distill(weights, cfg, folder, tmp_path / "y.pt", start=first, steps=1, **kw)  # selection=0: all trained


def test_teacher_ap_is_one_for_the_teachers_own_copy_and_falls_with_its_levels(files):
    """teacher_ap scores detections against the teacher's confident ones: the student's float network
    (a copy of the teacher) scores exactly 1; coarse levels, which move the outputs, score less."""
    from spikedet.distill.teacher_ap import teacher_ap

    cfg, weights, names, folder = files
    teacher = load_darknet(cfg, weights, names).eval()
    paths = training_images([folder])
    student = make_student(teacher, 2, channel_scales(teacher, load_batch(paths, 32))).eval()
    result = teacher_ap(student, teacher, paths, 32, [1, 2], truth_conf=0.3)  # < 100 per image
    assert result["float"] == {"AP50": 1.0, "AP": 1.0}
    assert 0 <= result["1"]["AP50"] < 1 and result["1"]["AP"] < 1
    with pytest.raises(SpikedetError, match="truth_conf"):
        teacher_ap(student, teacher, paths, 32, [1], truth_conf=1.0)
