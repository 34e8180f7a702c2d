"""The `spikedet` command: one subcommand per pipeline step, each a thin layer over the Python API
(spikedet.api.SpikingYOLO). Defaults and choices come from spikedet.defaults; every value is checked before
any work (spikedet.checks), and every error is one line, exit 2.

tools/*.py call the same subcommands, so `python tools/eval_map.py ...` == `spikedet eval ...`.
"""
import argparse
import sys

from .. import checks
from ..defaults import CHOICES, DEFAULTS
from ..errors import Interrupted, SpikedetError

COMMANDS = {}  # name -> (add_arguments, run, help)


class Parser(argparse.ArgumentParser):
    """argparse with spikedet's error form: one line, `error: ...`, exit 2 (no usage block)."""

    def error(self, message):
        self.exit(2, f"error: {message}\n")


def command(name, help):
    """Register `add_arguments(parser)` and `run(args, parser)` under a subcommand name."""

    def register(add_arguments):
        def with_run(run):
            COMMANDS[name] = (add_arguments, run, help)
            return run
        return with_run
    return register


def build_parser():
    parser = Parser(prog="spikedet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, (add_arguments, _, help) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help, description=help))
    return parser


def main(argv=None):
    """Run one subcommand; returns the exit status (2 for any bad input, with one `error:` line)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse's own exit: --help (0) or a bad argument (2)
        return e.code
    sub = parser._subparsers._group_actions[0].choices[args.command]
    try:
        return COMMANDS[args.command][1](args, sub) or 0
    except SystemExit as e:  # a command's own parser.error: already printed as one line
        return e.code
    except Interrupted as e:
        sys.stderr.write(f"interrupted: {e}\n")  # one write: torchrun ranks share the stream
        return e.exit_code
    except SpikedetError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2


def _run_folder_arguments(parser, project: str):
    """--project and --name: where a run writes (project/name, name2, ... when taken, as ultralytics)."""
    parser.add_argument("--project", type=checks.output_dir, default=project,
                        help=f"folder of the run folders (default: {project})")
    parser.add_argument("--name", default=DEFAULTS["name"],
                        help=f"run folder name (default: {DEFAULTS['name']}; {DEFAULTS['name']}2, ... when taken)")


def _network_arguments(parser, weights_help: str):
    parser.add_argument("--weights", required=True, type=checks.existing_file, help=weights_help)
    parser.add_argument("--cfg", type=checks.existing_file,
                        help="darknet .cfg: --weights is then a darknet .weights file")
    parser.add_argument("--names", type=checks.existing_file,
                        help="darknet .names file (default: coco.names / voc.names beside the cfg)")


def _open(args):
    from ..api import SpikingYOLO

    return SpikingYOLO(args.weights, cfg=args.cfg, names=args.names)


def _timesteps_arguments(parser, nargs, default_text):
    parser.add_argument("--timesteps", type=checks.timesteps, nargs=nargs, help=f"SNN time steps ({default_text})")
    parser.add_argument("--allow-long-t", action="store_true",
                        help=f"allow T above {DEFAULTS['max_timesteps']} (hours per image on a CPU)")


def _stream_arguments(parser, conf: float, iou_text: str):
    parser.add_argument("--imgsz", type=checks.image_size, help="network input size (default: the SNN's, or the size "
                        f"the ANN was trained at, else {DEFAULTS['imgsz']})")
    parser.add_argument("--conf", type=checks.fraction, default=conf, help=f"score threshold (default: {conf})")
    parser.add_argument("--iou", type=checks.iou, help=f"NMS IoU threshold ({iou_text})")
    parser.add_argument("--chunk", type=checks.positive, default=DEFAULTS["chunk"],
                        help=f"time steps per batched layer call (default: {DEFAULTS['chunk']})")
    parser.add_argument("--resize", choices=CHOICES["resize"],
                        help="default: stretch for darknet networks, letterbox for spikedet-trained ones")
    parser.add_argument("--device", type=checks.device, default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--burn-in", type=checks.burn_in, default=0, metavar="K",
                        help="SNN: read the output out over steps K+1..T only (the head's sum after T minus after K, "
                             "over T - K): leaves out the start, while deep layers have not yet begun to fire "
                             "(binary neurons; default 0)")
    parser.add_argument("--method", choices=CHOICES["method"],
                        help="SNN: closed-form (exact shortcut for burst neurons; their default unless spike "
                             "statistics are asked for) or steps (the simulation; the default otherwise)")


def _stream_options(args) -> dict:
    return {k: getattr(args, k) for k in ("imgsz", "conf", "iou", "chunk", "resize", "device", "method",
                                          "burn_in", "allow_long_t")}


# Subcommands, one block each, in pipeline order.


# The subcommands, in pipeline order, register themselves when their modules are imported.
from . import train_commands, run_commands, export_commands  # noqa: E402,F401  (this order: data, train, convert, ...)
