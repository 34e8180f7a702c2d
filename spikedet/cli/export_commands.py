"""`spikedet export`: a converted network for a neuromorphic toolchain (NIR 1.0), with its sidecar JSON."""
from .. import checks
from . import command

FORMATS = ("nir",)


def _add_export_arguments(parser):
    parser.add_argument("--weights", required=True, type=checks.existing_file,
                        help="an SNN file from `spikedet convert`")
    parser.add_argument("--format", choices=FORMATS, default="nir", help="nir: the Neuromorphic Intermediate "
                        "Representation (needs the [nir] extra)")
    parser.add_argument("--output", required=True, type=checks.output_file,
                        help="the graph to write (X.nir); its metadata goes to X.nir.json")
    parser.add_argument("--allow-approximations", action="store_true",
                        help="write burst events, reset by subtraction and v_init > 0 as NIR's IF neuron (one "
                             "event per step, reset to zero, v_init / T in the biases) instead of refusing")


@command("export", help="export a converted SNN as a NIR graph (Norse, sinabs, snnTorch, Lava, ... read it)"
         )(_add_export_arguments)
def _run_export(args, parser):
    from ..api import SpikingYOLO
    from ..export import sidecar_path

    info = SpikingYOLO(args.weights).export(format=args.format, output=args.output,
                                            allow_approximations=args.allow_approximations)
    changed = "; substituted: " + "; ".join(info["substitutions"]) if info["substitutions"] else ""
    print(f"exported {args.weights} -> {args.output} (NIR {info['nir_version']}), metadata -> "
          f"{sidecar_path(args.output)}{changed}")
