"""The `spikedet` command: one subcommand per pipeline step, each a thin layer over the Python API.

tools/*.py call the same subcommands, so `python tools/eval_map.py ...` == `spikedet eval ...`.
"""
import argparse
import sys

from .errors import SpikedetError

COMMANDS = {}  # name -> (add_arguments, run, help)


def command(name, help):
    """Register `add_arguments(parser)` and `run(args)` under a subcommand name."""

    def register(add_arguments):
        def with_run(run):
            COMMANDS[name] = (add_arguments, run, help)
            return run

        return with_run

    return register


def build_parser():
    parser = argparse.ArgumentParser(prog="spikedet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_arguments, _, help) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help, description=help))
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command][1](args) or 0
    except SpikedetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


# Subcommands live below, one block each, in pipeline order.


# --- eval ---------------------------------------------------------------------------------------------------


def _add_eval_arguments(parser):
    """Ground truth, then what to score, then where results go: each group can grow on its own
    (a later step may score a model's own output instead of a detections file)."""
    truth = parser.add_argument_group("ground truth (one of)").add_mutually_exclusive_group(required=True)
    truth.add_argument("--gt-coco", metavar="INSTANCES.json",
                       help="COCO instances file: the 12 COCOeval bbox metrics")
    truth.add_argument("--gt-voc", metavar="VOC_ROOT",
                       help="a VOC tree such as VOCdevkit/VOC2007: devkit AP at IoU 0.5")
    voc = parser.add_argument_group("PASCAL VOC options")
    voc.add_argument("--split", default="test", help="image set ImageSets/Main/SPLIT.txt (default: test)")
    voc.add_argument("--data", metavar="DATASET.yaml",
                     help="take class names from this dataset config instead of the 20 VOC classes")
    scored = parser.add_argument_group("detections")
    scored.add_argument("--detections", required=True, metavar="DETS.json",
                        help="COCO results format: [{image_id, category_id, bbox: [x, y, w, h], score}, ...]")
    output = parser.add_argument_group("output")
    output.add_argument("--json", metavar="OUT.json", help="also write the results here")
    output.add_argument("--verbose", action="store_true", help="show pycocotools' own output")


@command("eval", help="score detections against COCO or PASCAL VOC ground truth")(_add_eval_arguments)
def _run_eval(args):
    from .data.records import VOC_CLASSES, load_class_names
    from .eval import evaluate_coco, evaluate_voc
    from .eval.report import format_coco_table, format_voc_table
    from .fileio import atomic_write_json

    if args.gt_coco:
        if args.data:
            raise SpikedetError(f"{args.data}: --data names VOC classes; COCO takes them from {args.gt_coco}")
        results = {"coco": evaluate_coco(args.gt_coco, args.detections, verbose=args.verbose)}
        print(format_coco_table(results["coco"]))
    else:
        class_names = load_class_names(args.data) if args.data else VOC_CLASSES
        results = evaluate_voc(args.gt_voc, args.split, args.detections, class_names)
        print(format_voc_table(results))
    if args.json:
        atomic_write_json(args.json, results)
