"""The burn-in read-out: an SNN's output at T read over steps K+1..T only (engine.simulate(burn_in=K))."""
import cv2
import pytest
import torch

from spikedet import SpikingYOLO
from spikedet.cli import main
from spikedet.errors import SpikedetError
from spikedet.model.activation import calibrate_thresholds
from spikedet.model.yolo import DualErrorYOLO
from spikedet.snn import convert


def converted(spikes):
    torch.manual_seed(0)
    model = DualErrorYOLO("yolov3-tiny", nc=3, scale="n", dual_error={"levels": 8}).eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad(), calibrate_thresholds(model):
        model(images)
    return convert(model, spikes=spikes), images


@pytest.mark.parametrize("spikes, method", [("binary", "steps"), ("burst", "steps"), ("burst", "closed-form")])
def test_burn_in_reads_the_head_sum_after_k_steps_off_the_sum_after_t(spikes, method):
    """With the decoder made the identity, the read-out at T with burn-in K is (T * out_T - K * out_K) / (T - K)
    of the plain read-outs (the head's sums after T and after K steps): no step lost or counted twice, across
    chunk boundaries too (chunk 3: K = 5 falls inside a chunk, K = 6 on a boundary)."""
    snn, images = converted(spikes)
    snn.head.decode = lambda maps: torch.cat([m.flatten(1) for m in maps], 1)
    plain = snn.simulate(images, [5, 6, 11, 16], chunk=3, method=method)
    for k in (5, 6):
        late = snn.simulate(images, [11, 16], chunk=3, method=method, burn_in=k)
        for t in (11, 16):
            expected = (t * plain[t] - k * plain[k]) / (t - k)
            assert torch.allclose(late[t], expected, atol=1e-4), (k, t)
    assert not torch.equal(late[16], plain[16])  # the option changes the read-out


def test_burn_in_must_leave_steps_to_read(tmp_path, capsys):
    snn, images = converted("binary")
    with pytest.raises(ValueError, match="burn_in"):
        snn.simulate(images, [8, 16], burn_in=8)
    folder = tmp_path / "images"
    folder.mkdir()
    for k in range(2):
        cv2.imwrite(str(folder / f"im{k}.jpg"), (torch.rand(64, 64, 3) * 255).byte().numpy())
    path = tmp_path / "net.snn.pt"
    SpikingYOLO("yolov3-tiny", nc=3, scale="n").convert(calibration=folder, output=path, imgsz=64, spikes="binary",
                                                        timesteps=8)
    run = ["detect", "--weights", str(path), "--source", str(folder), "--project", str(tmp_path)]
    capsys.readouterr()
    assert main([*run, "--timesteps", "8", "--burn-in", "8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "burn_in 8" in err[0] and "fewer than every T" in err[0]
    assert main([*run, "--burn-in", "-1"]) == 2
    assert main([*run, "--timesteps", "8", "--burn-in", "4", "--name", "ok"]) == 0
    with pytest.raises(SpikedetError, match="burn_in"):
        SpikingYOLO("yolov3-tiny", nc=3, scale="n").predict(folder, burn_in=2, imgsz=64)  # an ANN reads no steps


def test_snn_head_loss_of_each_burn_in_is_that_of_its_own_read_out(tmp_path):
    """tools/burn_in_loss.py's measure: from one simulation, the loss at each K equals head_loss of the SNN read
    out with burn_in=K (decode=False: the raw maps the teacher's head gives)."""
    from spikedet.darknet import load_darknet
    from spikedet.distill import head_loss, load_batch, training_images
    from spikedet.distill.losses import snn_head_loss
    from test_distill import make_files

    cfg, weights, names, folder = make_files(tmp_path)
    teacher = load_darknet(cfg, weights, names).float().eval()
    paths = training_images(folder)[:4]
    x = load_batch(paths, 32)
    snn = convert(teacher, calibration_images=x, spikes="binary")
    losses = snn_head_loss(snn, teacher, paths, 32, 12, [0, 4, 7], batch=4)
    with torch.no_grad():
        target = teacher(x)[1]
        for k in (0, 4, 7):
            maps = snn.simulate(x, [12], method="steps", burn_in=k, decode=False)[12]
            assert losses[k] == pytest.approx(float(head_loss(maps, target, teacher.nc)["loss"]), rel=1e-5)
    assert len(set(round(v, 6) for v in losses.values())) == 3
