#!/usr/bin/env python3
"""Benchmark: SNN time per image at several T against T ANN forward passes, and peak memory.

Every measurement runs in a fresh subprocess, so its peak resident memory (CPU) or peak allocated memory
(CUDA) belongs to that configuration alone. The network is a Tiny-YOLO config at its real width with
calibrated random weights: the simulation is dense, so its cost does not depend on what was learned.

    python tools/benchmark_snn.py                       # yolov3-tiny, 416 px, T = 8 16 32 64, CPU
    python tools/benchmark_snn.py --device cuda --timesteps 16 64 256 --batch 8
    python tools/benchmark_snn.py --cfg yolov3-tiny.cfg --spikes binary   # a darknet cfg (leaky neurons)
"""
import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def measure(cfg: str, scale: str, imgsz: int, batch: int, timesteps: int, chunk: int, spikes: str,
            device: str, repeat: int) -> dict:
    """One configuration, in this process: ANN seconds per image, SNN seconds per image, peak memory."""
    import torch

    from spikedet.activation import calibrate_thresholds
    from spikedet.convert import convert
    from spikedet.model import SpikingYOLO

    torch.manual_seed(0)
    images = torch.rand(batch, 3, imgsz, imgsz)
    if cfg.endswith(".cfg"):  # darknet: scales from the activations of the images themselves
        from spikedet.darknet import DarknetModel

        model = DarknetModel(cfg).eval()
        snn = convert(model, calibration_images=images, spikes=spikes).to(device)
    else:
        model = SpikingYOLO(cfg, nc=80, scale=scale).eval()
        with torch.no_grad(), calibrate_thresholds(model):
            model(images)
        snn = convert(model, spikes=spikes).to(device)
    model, images = model.to(device), images.to(device)

    def timed(fn):
        fn()  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / repeat / batch

    with torch.no_grad():
        ann_s = timed(lambda: model(images))
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        snn_s = timed(lambda: snn.simulate(images, [timesteps], chunk=chunk))
    peak = (torch.cuda.max_memory_allocated() if device.startswith("cuda") else
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"T": timesteps, "chunk": chunk, "ann_ms_per_image": 1e3 * ann_s, "snn_ms_per_image": 1e3 * snn_s,
            "snn_over_T_ann": snn_s / (timesteps * ann_s), "peak_mem_mb": peak / 2 ** 20}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", default="yolov3-tiny", help="a model config, or a darknet .cfg")
    parser.add_argument("--scale", default="m", help="m = the original Tiny-YOLO widths")
    parser.add_argument("--imgsz", type=int, default=416)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--timesteps", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--chunk", type=int, nargs="+", default=[2])
    parser.add_argument("--spikes", default="burst", choices=("burst", "signed", "binary"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(**json.loads(args.worker))))
        return

    import torch

    width = "" if args.cfg.endswith(".cfg") else f" scale {args.scale}"
    print(f"{args.cfg}{width}, {args.imgsz} px, batch {args.batch}, {args.spikes} spikes, "
          f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    header = f"{'T':>5} {'chunk':>6} {'ANN ms/img':>11} {'SNN ms/img':>11} {'SNN/(T*ANN)':>12} {'peak MB':>9}"
    print(header + "\n" + "-" * len(header))
    rows = []
    for t in args.timesteps:
        for chunk in args.chunk:
            job = dict(cfg=args.cfg, scale=args.scale, imgsz=args.imgsz, batch=args.batch, timesteps=t,
                       chunk=chunk, spikes=args.spikes, device=args.device, repeat=args.repeat)
            done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], check=True,
                                  capture_output=True, text=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{t:>5} {chunk:>6} {row['ann_ms_per_image']:>11.1f} {row['snn_ms_per_image']:>11.1f} "
                  f"{row['snn_over_T_ann']:>12.2f} {row['peak_mem_mb']:>9.0f}", flush=True)
    if args.json:
        from spikedet.fileio import atomic_write_json

        atomic_write_json(args.json, rows)


if __name__ == "__main__":
    main()
