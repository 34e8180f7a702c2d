"""tools/benchmark_snn.py --peer spikingjelly: the SpikingJelly peer computes what spikedet computes, and the
flag fails with one line when SpikingJelly (an optional extra, `.[bench]`) is missing."""
import sys
from pathlib import Path

import pytest
import torch

TOOLS = Path(__file__).resolve().parents[1] / "tools"
sys.path.insert(0, str(TOOLS))

import benchmark_snn  # noqa: E402
import spikingjelly_peer  # noqa: E402

TINY = dict(cfg="yolov3-tiny", scale="n", imgsz=64, batch=1)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: tiny tensors gain nothing from more, and a loaded machine makes them crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(one_thread):
    """(snn, ann, images): yolov3-tiny at scale n, 64 px, calibrated random weights, binary neurons."""
    return benchmark_snn.build_network(spikes="binary", **TINY)


def test_spikingjelly_peer_agrees_with_spikedet(tiny):
    pytest.importorskip("spikingjelly")
    snn, _, images = tiny
    ref = snn.simulate(images, [4])[4]
    shared = spikingjelly_peer.build_peer(snn, "shared")
    out = shared(images, 4)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(shared(images, 4), out)  # state is reset between images
    plain = spikingjelly_peer.build_peer(snn, "plain")(images, 4)
    assert plain.shape == ref.shape and torch.isfinite(plain).all()


def test_peer_timing_row(tiny, monkeypatch):
    pytest.importorskip("spikingjelly")
    monkeypatch.setattr(benchmark_snn, "build_network", lambda *a, **k: tiny)
    row = benchmark_snn.time_peer(timesteps=4, chunk=2, spikes="binary", device="cpu", repeat=1, **TINY)
    for key in ("spikedet_s", "spikingjelly_s", "spikingjelly_plain_pool_s"):
        assert row[key] > 0 and len(row[key.replace("_s", "_times_s")]) == 1
    assert row["ann_s"] > 0 and len(row["ann_times_s"]) == benchmark_snn.ANN_PASSES
    assert row["max_abs_head_diff"] <= 1e-5 * max(1.0, row["head_max_abs"])
    assert row["T"] == 4 and row["spikes"] == "binary" and row["imgsz"] == 64


def test_peer_refuses_neurons_it_cannot_express():
    snn, _, _ = benchmark_snn.build_network(spikes="burst", **TINY)
    with pytest.raises(spikingjelly_peer.PeerUnavailable, match="burst neurons have no SpikingJelly"):
        spikingjelly_peer.check_expressible(snn)


def _hide_spikingjelly(monkeypatch):
    for name in [n for n in sys.modules if n == "spikingjelly" or n.startswith("spikingjelly.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "spikingjelly", None)  # import spikingjelly -> ImportError


def test_peer_flag_without_spikingjelly_fails_in_one_line(monkeypatch, capsys):
    _hide_spikingjelly(monkeypatch)
    with pytest.raises(spikingjelly_peer.PeerUnavailable):
        spikingjelly_peer.require_spikingjelly()
    with pytest.raises(SystemExit) as e:
        benchmark_snn.main(["--peer", "spikingjelly", "--timesteps", "4"])
    out, err = capsys.readouterr()
    assert e.value.code == 2 and "pip install '.[bench]'" in err and err.count("\n") == 1
    assert out == ""  # nothing was measured


def test_peer_needs_binary_spikes(monkeypatch, capsys):
    pytest.importorskip("spikingjelly")
    with pytest.raises(SystemExit) as e:
        benchmark_snn.main(["--peer", "spikingjelly", "--spikes", "burst"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--spikes binary" in err and err.count("\n") == 1
