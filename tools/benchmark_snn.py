#!/usr/bin/env python3
"""Benchmark: SNN time per image at several T against T dense ANN passes, peak memory, and a SpikingJelly peer.

Without --peer, each (T, chunk) runs in a fresh subprocess, so its peak resident memory (CPU) or peak allocated
memory (CUDA) belongs to that configuration alone. The network is a Tiny-YOLO config at its real width with
calibrated random weights (the simulation is dense, so its cost does not depend on what was learned), a
darknet .cfg with random weights, or a network file (--weights: an SNN file, a spikedet checkpoint, or darknet
.weights with --cfg).

With --peer spikingjelly (an optional extra: pip install '.[bench]'), the same SNN is also built in SpikingJelly
(tools/spikingjelly_peer.py) in two variants: spikedet's count-gated max-pool inside (the heads must agree) and
SpikingJelly's plain multi-step max-pool. Per T, one subprocess times the ANN, spikedet and both peers
interleaved (--repeat rounds, the order rotated each round, 5 ANN passes per round; min and median), and
checks head agreement; then one fresh subprocess per (tool, T) measures its peak RSS. Peer comparison needs
binary IF neurons: spikes default to binary, and a darknet .cfg built here has its leaky units replaced by
ReLU (SpikingJelly has no neuron with leaky / negative events); an SNN file with other neurons is refused
with a one-line message.

    python tools/benchmark_snn.py                       # yolov3-tiny, 416 px, T = 8 16 32 64, CPU
    python tools/benchmark_snn.py --device cuda --timesteps 16 64 256 --batch 8
    python tools/benchmark_snn.py --cfg configs/darknet/yolov3-tiny.cfg --spikes binary  # a darknet cfg (leaky units)
    python tools/benchmark_snn.py --peer spikingjelly --timesteps 8 16 64 128 --json peer.json
    python tools/benchmark_snn.py --peer spikingjelly --weights runs/x.snn.pt --timesteps 16
"""
import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/spikingjelly_peer.py

from spikedet.defaults import CHOICES, DEFAULTS  # noqa: E402  (no torch import: the workers import it themselves)

PEERS = ("spikingjelly",)
TOOLS = ("ann", "spikedet", "spikingjelly", "spikingjelly_plain_pool")
PEER_POOL = {"spikingjelly": "shared", "spikingjelly_plain_pool": "plain"}
ANN_PASSES = 5  # ANN passes per round of the interleaved timing


def die(message: str):
    """One line, `error: ...`, exit 2: how every spikedet command reports bad input or a failed step."""
    print(f"error: benchmark_snn.py: {message}", file=sys.stderr)
    sys.exit(2)


def loadavg() -> list:
    return [round(x, 2) for x in os.getloadavg()]


def rss_mb() -> float:
    """Current resident set size (Linux), MB."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except OSError:
        return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


# ---------------------------------------------------------------------------------------------------------
# building the network (in a worker)

def build_network(cfg: str, scale: str, imgsz: int, batch: int, spikes: str, weights: str = None,
                  peer: bool = False):
    """(snn, ann, images): the SNN to measure, the dense ANN it came from, and the input batch."""
    import torch

    from spikedet.snn import convert

    torch.manual_seed(0)
    leaky = "relu" if peer else None  # SpikingJelly has no leaky (negative-event) neuron
    if weights:
        from spikedet.networks import is_snn, load_network

        net, ann = load_network(weights, cfg if cfg.endswith(".cfg") else None)
        images = torch.rand(batch, 3, imgsz, imgsz)
        if is_snn(net):
            return net.eval(), ann.float().eval(), images
        ann = net.float().eval()
        return convert(ann, calibration_images=images, spikes=spikes, leaky=leaky), ann, images
    images = torch.rand(batch, 3, imgsz, imgsz)
    if cfg.endswith(".cfg"):  # darknet: scales from the activations of the images themselves
        from spikedet.darknet import DarknetModel

        model = DarknetModel(cfg).eval()
        return convert(model, calibration_images=images, spikes=spikes, leaky=leaky), model, images
    from spikedet.model.activation import calibrate_thresholds
    from spikedet.model.yolo import DualErrorYOLO

    model = DualErrorYOLO(cfg, nc=80, scale=scale).eval()
    with torch.no_grad(), calibrate_thresholds(model):
        model(images)
    return convert(model, spikes=spikes), model, images


def _sync(device: str):
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def runner(tool: str, snn, ann, images, timesteps: int, chunk: int, device: str):
    """A callable running one tool once on the batch; returns its decoded head (or the ANN's output)."""
    if tool == "ann":
        return lambda t=timesteps: ann(images)
    if tool == "spikedet":
        return lambda t=timesteps: snn.simulate(images, [t], chunk=chunk)[t]
    from spikingjelly_peer import build_peer

    peer = build_peer(snn, PEER_POOL[tool]).to(device)
    return lambda t=timesteps: peer(images, t)


# ---------------------------------------------------------------------------------------------------------
# workers (each in its own subprocess)

def measure(cfg: str, scale: str, imgsz: int, batch: int, timesteps: int, chunk: int, spikes: str,
            device: str, repeat: int, weights: str = None) -> dict:
    """No peer: one configuration, in this process: ANN and SNN seconds per image, peak memory."""
    import torch

    snn, model, images = build_network(cfg, scale, imgsz, batch, spikes, weights)
    snn, model, images = snn.to(device), model.to(device), images.to(device)

    def timed(fn):
        fn()  # warm-up
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        _sync(device)
        return (time.perf_counter() - start) / repeat / batch

    load = loadavg()
    with torch.no_grad():
        ann_s = timed(lambda: model(images))
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        snn_s = timed(lambda: snn.simulate(images, [timesteps], chunk=chunk))
    peak = torch.cuda.max_memory_allocated() / 2 ** 20 if device.startswith("cuda") else peak_rss_mb()
    return {"T": timesteps, "chunk": chunk, "spikes": spikes, "imgsz": imgsz, "batch": batch, "ann_s": ann_s,
            "spikedet_s": snn_s, "spikedet_over_T_ann": snn_s / (timesteps * ann_s), "spikedet_peak_mb": peak,
            # the keys of the earlier list-of-rows JSON, kept for whoever reads them
            "ann_ms_per_image": 1e3 * ann_s, "snn_ms_per_image": 1e3 * snn_s,
            "snn_over_T_ann": snn_s / (timesteps * ann_s), "peak_mem_mb": peak,
            "loadavg_before": load, "loadavg_after": loadavg()}


def time_peer(cfg: str, scale: str, imgsz: int, batch: int, timesteps: int, chunk: int, spikes: str,
              device: str, repeat: int, weights: str = None) -> dict:
    """Peer: the ANN, spikedet and both SpikingJelly variants timed interleaved in this process."""
    import torch

    code = code_state()  # what this worker imports, and when it started
    snn, ann, images = build_network(cfg, scale, imgsz, batch, spikes, weights, peer=True)
    snn, ann, images = snn.to(device), ann.to(device), images.to(device)
    runs = {tool: runner(tool, snn, ann, images, timesteps, chunk, device) for tool in TOOLS}
    warm = min(timesteps, 4)
    with torch.no_grad():
        for tool in TOOLS:  # warm-up at a short T (allocator, thread pool, first-call costs)
            runs[tool](warm) if tool != "ann" else runs[tool]()
        times, outputs, loads = {tool: [] for tool in TOOLS}, {}, [loadavg()]
        for r in range(repeat):
            order = TOOLS[r % len(TOOLS):] + TOOLS[:r % len(TOOLS)]  # rotated, so no tool always goes first
            for tool in order:
                for _ in range(ANN_PASSES if tool == "ann" else 1):  # one ANN pass is short: sample it more
                    _sync(device)
                    start = time.perf_counter()
                    out = runs[tool]()
                    _sync(device)
                    times[tool].append((time.perf_counter() - start) / batch)
                outputs.setdefault(tool, out)
            loads.append(loadavg())
    ref = outputs["spikedet"]
    diff = {tool: float((outputs[tool] - ref).abs().max()) for tool in PEER_POOL}
    row = {"T": timesteps, "spikes": spikes, "imgsz": imgsz, "batch": batch, "chunk": chunk, "repeat": repeat}
    for tool in TOOLS:
        key = "ann" if tool == "ann" else tool
        row[f"{key}_s"] = statistics.median(times[tool])
        row[f"{key}_min_s"] = min(times[tool])
        row[f"{key}_times_s"] = times[tool]
    row["max_abs_head_diff"] = diff["spikingjelly"]
    row["max_abs_head_diff_plain_pool"] = diff["spikingjelly_plain_pool"]
    row["head_max_abs"] = float(ref.abs().max())
    row["loadavg"] = loads
    row["code"] = code
    row["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return row


def peak_one(cfg: str, scale: str, imgsz: int, batch: int, timesteps: int, chunk: int, spikes: str,
             device: str, tool: str, weights: str = None) -> dict:
    """One tool, one run, in a fresh process: its peak RSS (and what the process held before the run)."""
    import torch

    snn, ann, images = build_network(cfg, scale, imgsz, batch, spikes, weights, peer=True)
    run = runner(tool, snn, ann, images, timesteps, chunk, device)
    if tool != "spikedet":
        del snn  # a peer holds its own copy of the weights
    before_now, before_peak = rss_mb(), peak_rss_mb()
    with torch.no_grad():
        run()
    return {"tool": tool, "T": timesteps, "peak_mb": peak_rss_mb(), "rss_before_run_mb": before_now,
            "peak_before_run_mb": before_peak}


def worker_main(job: dict):
    from spikingjelly_peer import PeerUnavailable

    from spikedet.errors import SpikedetError

    kind = job.pop("kind")
    try:
        result = {"measure": measure, "time": time_peer, "peak": peak_one}[kind](**job)
    except (PeerUnavailable, SpikedetError) as e:
        print(str(e).splitlines()[0], file=sys.stderr)
        sys.exit(2)
    print(json.dumps(result))


def run_worker(job: dict) -> dict:
    done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True, text=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"worker exited with {done.returncode}"]
        die(f"{lines[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------------
# the CLI

def check_peer(peer: str, spikes: str) -> str:
    """The peer's version, or SystemExit with a one-line message (SpikingJelly missing, spikes not binary)."""
    from spikingjelly_peer import PeerUnavailable, require_spikingjelly, spikingjelly_version

    if peer not in PEERS:
        die(f"unknown peer {peer!r} (known: {', '.join(PEERS)})")
    try:
        require_spikingjelly()
    except PeerUnavailable as e:
        die(f"{e}")
    from spikedet.snn.neurons import make_neuron

    neuron = make_neuron(spikes)
    if neuron.multi_events or neuron.negative_events:
        die(f"--peer {peer} needs --spikes binary (SpikingJelly's IFNode emits binary spikes), got {spikes}")
    return spikingjelly_version()


def code_state() -> dict:
    """When and against what the numbers were taken: time, git HEAD, and a hash of spikedet/snn/*.py as it was."""
    h = hashlib.sha1()
    for p in sorted((ROOT / "spikedet" / "snn").glob("*.py")):
        h.update(p.name.encode() + p.read_bytes())
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        head = None
    return {"utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "git_head": head,
            "spikedet_snn_sha1": h.hexdigest()[:12]}


def fmt(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:.2f}" if x < 100 else f"{x:.1f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", default="yolov3-tiny", help="a model config, or a darknet .cfg")
    parser.add_argument("--scale", default="m", help="m = the original Tiny-YOLO widths")
    parser.add_argument("--weights", help="a network file: an SNN file (.snn.pt), a spikedet checkpoint, or darknet "
                                          ".weights (with --cfg); default: calibrated random weights")
    parser.add_argument("--imgsz", type=int, help="default 416, or the size an SNN file was converted at")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--timesteps", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--chunk", type=int, nargs="+", default=[DEFAULTS["chunk"]],
                        help=f"spikedet's chunk (peer: the first; default {DEFAULTS['chunk']}, spikedet's)")
    parser.add_argument("--spikes", choices=CHOICES["spikes"],
                        help="default burst; binary with --peer")
    parser.add_argument("--peer", help="also build and time the same SNN in this framework (spikingjelly)")
    parser.add_argument("--no-peak", action="store_true", help="--peer: skip the per-(tool, T) peak-RSS processes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, help="timed runs per tool (default 2; with --peer 3, at least 3)")
    parser.add_argument("--json", help="also write {'meta': ..., 'rows': [...]} here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(json.loads(args.worker))
        return
    spikes = args.spikes or ("binary" if args.peer else "burst")
    version = check_peer(args.peer, spikes) if args.peer else None
    repeat = args.repeat or (3 if args.peer else 2)
    if args.peer and repeat < 3:
        die("--peer needs --repeat 3 or more (min and median of >= 3)")
    if args.json:
        _check_output(args.json)
    imgsz = args.imgsz or _default_imgsz(args.weights, args.cfg)

    import torch

    source = args.weights or (args.cfg + ("" if args.cfg.endswith(".cfg") else f" scale {args.scale}"))
    meta = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "network": source, "imgsz": imgsz,
            "batch": args.batch, "spikes": spikes, "device": args.device, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "peer": args.peer,
            "spikingjelly": version, **code_state(), "loadavg_start": loadavg()}
    leaky_note = " (darknet leaky units -> ReLU for the peer)" if args.peer and args.cfg.endswith(".cfg") else ""
    print(f"{source}{leaky_note}, {imgsz} px, batch {args.batch}, {spikes} spikes, device {args.device}, "
          f"torch {torch.__version__}, {meta['threads']} threads"
          + (f", spikingjelly {version}" if version else "") + f"; {meta['utc']}, load {meta['loadavg_start']}")
    common = dict(cfg=args.cfg, scale=args.scale, imgsz=imgsz, batch=args.batch, spikes=spikes,
                  device=args.device, weights=args.weights)
    rows = peer_table(args, common, repeat) if args.peer else plain_table(args, common, repeat)
    meta["loadavg_end"] = loadavg()
    print(f"done {time.strftime('%H:%M:%S', time.gmtime())} UTC, load {meta['loadavg_end']}")
    if args.json:
        from spikedet.errors import SpikedetError
        from spikedet.fileio import atomic_write_json

        try:
            atomic_write_json(args.json, {"meta": meta, "rows": rows}, indent=1, replace=False)
        except SpikedetError as e:
            die(f"{e}")


def _check_output(path: str):
    """--json checked before any work: a new file in a writable folder (the run takes minutes)."""
    from spikedet.checks import output_file

    try:
        output_file(path)
    except argparse.ArgumentTypeError as e:
        die(f"argument --json: {e}")


def _default_imgsz(weights, cfg) -> int:
    """The size an SNN file was converted at, else the default; the network file is opened here once, through
    spikedet's loader and its checks, so a bad or hostile file is refused before any worker starts."""
    from spikedet.errors import SpikedetError
    from spikedet.networks import default_imgsz, load_network

    if not weights:
        return DEFAULTS["imgsz"]
    try:
        network, _ = load_network(weights, cfg if cfg.endswith(".cfg") else None)
    except SpikedetError as e:
        die(f"{e}")
    return default_imgsz(network)


def plain_table(args, common: dict, repeat: int) -> list:
    header = (f"{'T':>5} {'chunk':>6} {'ANN ms/img':>11} {'SNN ms/img':>11} {'SNN/(T*ANN)':>12} {'peak MB':>9} "
              f"{'load':>16}")
    print(header + "\n" + "-" * len(header))
    rows = []
    for t in args.timesteps:
        for chunk in args.chunk:
            row = run_worker(dict(kind="measure", timesteps=t, chunk=chunk, repeat=repeat, **common))
            rows.append(row)
            print(f"{t:>5} {chunk:>6} {row['ann_ms_per_image']:>11.1f} {row['snn_ms_per_image']:>11.1f} "
                  f"{row['spikedet_over_T_ann']:>12.2f} {row['spikedet_peak_mb']:>9.0f} "
                  f"{' '.join(f'{x:.2f}' for x in row['loadavg_after']):>16}", flush=True)
    return rows


def peer_table(args, common: dict, repeat: int) -> list:
    chunk = args.chunk[0]
    print(f"s/img: median (min) of {repeat} interleaved runs; peak MB: ru_maxrss of a fresh process per (tool, T); "
          f"spikedet chunk {chunk}")
    header = (f"{'T':>5} {'ANN s':>7} {'spikedet s':>16} {'SJ s':>16} {'SJ plain s':>16} {'SJ/sd':>6} "
              f"{'sd/TA':>6} {'SJ/TA':>6} {'plain/TA':>8} {'sd MB':>6} {'SJ MB':>6} {'plain MB':>8} "
              f"{'head diff':>9} {'plain diff':>10} {'load':>15}")
    print(header + "\n" + "-" * len(header))
    rows = []
    for t in args.timesteps:
        row = run_worker(dict(kind="time", timesteps=t, chunk=chunk, repeat=repeat, **common))
        if not args.no_peak:
            for tool in TOOLS:
                peak = run_worker(dict(kind="peak", timesteps=t, chunk=chunk, tool=tool, **common))
                key = "ann" if tool == "ann" else tool
                row[f"{key}_peak_mb"] = peak["peak_mb"]
                row[f"{key}_rss_before_run_mb"] = peak["rss_before_run_mb"]
                row[f"{key}_peak_before_run_mb"] = peak["peak_before_run_mb"]
        row["spikingjelly_over_spikedet"] = row["spikingjelly_s"] / row["spikedet_s"]
        row["spikingjelly_plain_pool_over_spikedet"] = row["spikingjelly_plain_pool_s"] / row["spikedet_s"]
        for tool in TOOLS[1:]:
            row[f"{tool}_over_T_ann"] = row[f"{tool}_s"] / (t * row["ann_s"])
        row["loadavg_end"] = loadavg()
        rows.append(row)

        def pair(key):
            return f"{fmt(row[key + '_s'])} ({fmt(row[key + '_min_s'])})"

        def mb(key):
            return f"{row.get(key + '_peak_mb', float('nan')):.0f}"

        print(f"{t:>5} {fmt(row['ann_s']):>7} {pair('spikedet'):>16} {pair('spikingjelly'):>16} "
              f"{pair('spikingjelly_plain_pool'):>16} {row['spikingjelly_over_spikedet']:>6.2f} "
              f"{row['spikedet_over_T_ann']:>6.2f} {row['spikingjelly_over_T_ann']:>6.2f} "
              f"{row['spikingjelly_plain_pool_over_T_ann']:>8.2f} {mb('spikedet'):>6} {mb('spikingjelly'):>6} "
              f"{mb('spikingjelly_plain_pool'):>8} {row['max_abs_head_diff']:>9.2g} "
              f"{row['max_abs_head_diff_plain_pool']:>10.3g} {' '.join(f'{x:.2f}' for x in row['loadavg_end']):>15}",
              flush=True)
    return rows


if __name__ == "__main__":
    main()
