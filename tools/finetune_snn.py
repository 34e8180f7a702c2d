#!/usr/bin/env python3
"""Fine-tune a dual-error ANN checkpoint through the T steps of its binary IF neurons (reset to zero, v_init 0)
with a surrogate gradient, on a labelled dataset (spikedet.snn.finetune); writes an ANN checkpoint to convert
with `tools/convert.py --spikes binary --reset zero --v-init 0`."""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from spikedet import checks  # noqa: E402
from spikedet.cli import Parser  # noqa: E402
from spikedet.errors import SpikedetError  # noqa: E402


def main(argv=None) -> int:
    parser = Parser(description=__doc__)
    parser.add_argument("--weights", required=True, type=checks.existing_file, help="a spikedet ANN checkpoint")
    parser.add_argument("--data", required=True, type=checks.existing_file, help="ultralytics dataset YAML")
    parser.add_argument("--output", required=True, type=checks.output_file, help="the fine-tuned checkpoint (new)")
    parser.add_argument("--timesteps", type=checks.timesteps, default=32, help="T (default: 32)")
    parser.add_argument("--burn-in", type=checks.burn_in, default=0, metavar="K",
                        help="the head read out over steps K+1..T, as `eval --burn-in K` (default: 0)")
    parser.add_argument("--epochs", type=checks.positive, default=1, help="default: 1")
    parser.add_argument("--lr", type=checks.number(0, 1, low_open=True), default=1e-4,
                        help="Adam's learning rate, a cosine to 0 over the run (default: 1e-4)")
    parser.add_argument("--batch", type=checks.positive, default=8, help="default: 8")
    parser.add_argument("--imgsz", type=checks.image_size, default=192, help="default: 192")
    parser.add_argument("--max-batches", type=checks.positive, metavar="N",
                        help="at most N batches per epoch (default: the whole training split)")
    parser.add_argument("--agreement", type=checks.agreement, default=0.0, metavar="W",
                        help="weight of the SNN's agreement with the outputs of the ANN it starts from, beside "
                             "the labels' loss (default: 0, off)")
    parser.add_argument("--seed", type=int, default=0, help="default: 0")
    parser.add_argument("--threads", type=checks.positive, help="torch threads (default: torch's)")
    try:
        args = parser.parse_args(argv)
        if args.burn_in >= args.timesteps:
            parser.error(f"argument --burn-in: {args.burn_in} leaves no step of T = {args.timesteps} to read out")
    except SystemExit as e:  # --help (0) or a bad argument (2, one line)
        return e.code
    try:
        import torch

        from spikedet.model.checkpoint import load_ann
        from spikedet.snn.finetune import CONVERSION, finetune, labelled_batches, save_finetuned

        if args.threads:
            torch.set_num_threads(args.threads)
        torch.manual_seed(args.seed)
        model = load_ann(args.weights)
        loader = labelled_batches(args.data, "train", args.imgsz, args.batch, augment=True, seed=args.seed)
        started = time.time()
        history = finetune(model, loader, args.timesteps, args.burn_in, args.epochs, args.lr,
                           max_batches=args.max_batches, agreement=args.agreement)
        record = {"start": str(args.weights), "data": str(args.data), "timesteps": args.timesteps,
                  "burn_in": args.burn_in, "epochs": args.epochs, "lr": args.lr, "batch": args.batch,
                  "imgsz": args.imgsz, "max_batches": args.max_batches, "agreement": args.agreement,
                  "seed": args.seed, "conversion": CONVERSION, "history": history,
                  "minutes": round((time.time() - started) / 60, 2)}
        path = save_finetuned(model, args.output, record)
    except SpikedetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}; convert it with --spikes binary --reset zero --v-init 0 --timesteps {args.timesteps}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
