#!/usr/bin/env python3
"""Benchmark: where a distillation step's time goes (loading and augmenting the batch, the teacher's forward
pass, the student's forward pass and loss, backward and the optimizer step) and steps per minute.

Each phase calls what spikedet.distill's loop calls, on the same real images and network, so a change to the
activation, the loss or the loader shows here as it will in a run. The figures are wall-clock seconds on this
machine; on shared cores compare two versions in one run, alternated (--rounds), not across runs:

    python tools/benchmark_distill.py --weights yolov3-tiny.weights --cfg configs/darknet/yolov3-tiny.cfg \
        --images train/ --steps 6
    PYTHONPATH=/path/to/other/checkout python tools/benchmark_distill.py ...   # the other version's spikedet
    python tools/benchmark_distill.py ... --binary-steps 32 --burn-in 20 --imgsz 320 --batch 2  # binary_steps=32
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # after PYTHONPATH, so another checkout can be measured with this script

from spikedet import checks  # noqa: E402
from spikedet.darknet import load_darknet  # noqa: E402
from spikedet.distill import (DistillImages, feature_loss, head_loss, leaky_activations, make_student,  # noqa: E402
                              mse_scales, set_levels, training_images, load_batch)
from spikedet.fileio import atomic_write_json  # noqa: E402

PHASES = ("load", "teacher", "student", "backward")


def measure(args) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    teacher = load_darknet(args.cfg, args.weights).float().eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    paths = training_images(args.images)
    data = DistillImages(paths, args.imgsz, 0, args.augment)
    scales = mse_scales(teacher, load_batch(paths[:args.batch], args.imgsz), [8, 16])
    student = make_student(teacher, 8, scales)
    student.eval()
    optimizer = torch.optim.Adam(student.parameters(), 1e-5)
    captures = _last_outputs(leaky_activations(teacher)), _last_outputs(leaky_activations(student))
    binary = None
    if args.binary_steps:  # a step of distill's binary_steps=T: the student as its unrolled binary SNN
        from spikedet.snn.finetune import DISTILL_CONVERSION, UnrolledSNN

        binary = UnrolledSNN(student, args.binary_steps, args.burn_in, DISTILL_CONVERSION["v_init"],
                             DISTILL_CONVERSION["reset"])
    times = {phase: [] for phase in PHASES}
    for step in range(args.steps + 1):  # the first step warms up and is not counted
        first = step * args.batch % len(paths)
        clock = [time.perf_counter()]
        x = torch.stack([data[(first + i) % len(paths)] for i in range(args.batch)])
        clock.append(time.perf_counter())
        with torch.no_grad():
            _, t_maps = teacher(x)
        clock.append(time.perf_counter())
        if binary is None:
            set_levels(student, (8, 16)[step % 2])
            _, s_maps = student(x)
            features = feature_loss(captures[1].outputs, captures[0].outputs, scales)
            loss = head_loss(s_maps, t_maps, teacher.nc)["loss"] + 25 * features
        else:
            _, s_maps = binary(x)
            loss = head_loss(s_maps, t_maps, teacher.nc)["loss"]
        clock.append(time.perf_counter())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        clock.append(time.perf_counter())
        if step:
            for phase, start, end in zip(PHASES, clock, clock[1:]):
                times[phase].append(end - start)
    result = {phase: statistics.median(v) for phase, v in times.items()}
    result["step"] = sum(result.values())
    result["steps_per_minute"] = 60 / result["step"]
    return result


class _last_outputs:
    """Each module's latest output, by plain hooks: this script also measures older checkouts."""

    def __init__(self, modules):
        self.outputs = [None] * len(modules)
        for k, m in enumerate(modules):
            m.register_forward_hook(lambda _, __, out, k=k: self.outputs.__setitem__(k, out))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, type=checks.existing_file, help="darknet .weights (the teacher)")
    parser.add_argument("--cfg", required=True, type=checks.existing_file, help="its .cfg")
    parser.add_argument("--images", required=True, type=checks.existing_path, help="a folder of training images")
    parser.add_argument("--imgsz", type=checks.image_size, default=416)
    parser.add_argument("--batch", type=checks.positive, default=8)
    parser.add_argument("--steps", type=checks.positive, default=6, help="timed steps (after one warm-up step)")
    parser.add_argument("--threads", type=checks.positive, default=torch.get_num_threads())
    parser.add_argument("--augment", choices=("crop", "mosaic_mixup"), default="crop")
    parser.add_argument("--binary-steps", type=checks.positive, metavar="T",
                        help="time a step through the binary SNN's T steps (distill's binary_steps=T) instead")
    parser.add_argument("--burn-in", type=checks.burn_in, default=0, metavar="K", help="with --binary-steps")
    parser.add_argument("--json", type=checks.output_file, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.binary_steps and args.burn_in >= args.binary_steps:
        parser.error(f"argument --burn-in: {args.burn_in} leaves no step of {args.binary_steps} to read out")
    result = measure(args)
    import spikedet
    print(f"spikedet from {Path(spikedet.__file__).parent}, {args.threads} threads, batch {args.batch}, "
          f"{args.imgsz} px, median of {args.steps} steps"
          + (f", through the binary SNN's {args.binary_steps} steps" if args.binary_steps else ""))
    print("  ".join(f"{k} {result[k]:.3f} s" for k in PHASES + ("step",))
          + f"  -> {result['steps_per_minute']:.1f} steps/min")
    if args.json:
        atomic_write_json(args.json, result)


if __name__ == "__main__":
    main()
