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
