"""The `spikedet` command: one subcommand per pipeline step, each a thin layer over the Python API
(spikedet.api.SpikingYOLO). Defaults and choices come from spikedet.defaults; every value is checked before
any work (spikedet.checks), and every error is one line, exit 2.

tools/*.py call the same subcommands, so `python tools/eval_map.py ...` == `spikedet eval ...`.
"""
import argparse
import sys

from . import checks
from .defaults import CHOICES, DEFAULTS
from .errors import SpikedetError

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
    except SpikedetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _network_arguments(parser, weights_help: str):
    parser.add_argument("--weights", required=True, type=checks.existing_file, help=weights_help)
    parser.add_argument("--cfg", type=checks.existing_file,
                        help="darknet .cfg: --weights is then a darknet .weights file")
    parser.add_argument("--names", type=checks.existing_file,
                        help="darknet .names file (default: coco.names / voc.names beside the cfg)")


def _open(args):
    from .api import SpikingYOLO

    return SpikingYOLO(args.weights, cfg=args.cfg, names=args.names)


def _timesteps_arguments(parser, nargs, default_text):
    parser.add_argument("--timesteps", type=checks.timesteps, nargs=nargs, help=f"SNN time steps ({default_text})")
    parser.add_argument("--allow-long-t", action="store_true",
                        help=f"allow T above {DEFAULTS['max_timesteps']} (hours per image on a CPU)")


def _stream_arguments(parser, conf: float, iou_text: str):
    parser.add_argument("--imgsz", type=checks.image_size, help="network input size (default: the SNN's, else "
                        f"{DEFAULTS['imgsz']})")
    parser.add_argument("--conf", type=checks.fraction, default=conf, help=f"score threshold (default: {conf})")
    parser.add_argument("--iou", type=checks.iou, help=f"NMS IoU threshold ({iou_text})")
    parser.add_argument("--chunk", type=checks.positive, default=DEFAULTS["chunk"],
                        help=f"time steps per batched layer call (default: {DEFAULTS['chunk']})")
    parser.add_argument("--resize", choices=CHOICES["resize"],
                        help="default: stretch for darknet networks, letterbox for spikedet-trained ones")
    parser.add_argument("--device", type=checks.device, default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--method", choices=CHOICES["method"],
                        help="SNN: closed-form (exact shortcut for burst neurons; their default unless spike "
                             "statistics are asked for) or steps (the simulation; the default otherwise)")


def _stream_options(args) -> dict:
    return {k: getattr(args, k) for k in ("imgsz", "conf", "iou", "chunk", "resize", "device", "method",
                                          "allow_long_t")}


# Subcommands, one block each, in pipeline order.
# --- data ---------------------------------------------------------------------------------------------------


def _add_data_arguments(parser):
    parser.add_argument("--root", default="data/shapes", help="output folder (default: data/shapes)")
    parser.add_argument("--imgsz", type=checks.image_size, default=192, help="image side in pixels (default: 192)")
    for split, n in (("train", 320), ("val", 80), ("test", 80)):
        parser.add_argument(f"--{split}", type=checks.positive, default=n, help=f"{split} images (default: {n})")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])


@command("data", help="make the embedded shapes dataset in VOC, COCO and ultralytics YOLO layouts")(
    _add_data_arguments)
def _run_data(args, parser):
    from .data.shapes import make_shapes_dataset

    paths = make_shapes_dataset(args.root, imgsz=args.imgsz, seed=args.seed,
                                counts={"train": args.train, "val": args.val, "test": args.test})
    print(f"VOC:  {paths['voc']}\nCOCO: {paths['coco']['test'].parent}\nYOLO: {paths['yolo']}")


# --- train --------------------------------------------------------------------------------------------------


def _add_train_arguments(parser):
    parser.add_argument("overrides", nargs="*", type=checks.key_value, metavar="key=value",
                        help="other ultralytics train arguments, e.g. optimizer=AdamW lr0=0.001 mosaic=0")
    parser.add_argument("--data", type=checks.existing_file,
                        help="ultralytics dataset YAML (e.g. data/shapes/yolo/shapes.yaml)")
    parser.add_argument("--model", default=DEFAULTS["model"], help="model config name or YAML (configs/)")
    parser.add_argument("--epochs", type=checks.positive,
                        help=f"default: {DEFAULTS['epochs']} ({DEFAULTS['epochs_distill']} with --distill)")
    parser.add_argument("--imgsz", type=checks.image_size, default=DEFAULTS["imgsz"])
    parser.add_argument("--batch", type=checks.positive, help=f"default: {DEFAULTS['batch_train']} "
                        f"({DEFAULTS['batch_distill']} with --distill)")
    parser.add_argument("--device", type=checks.training_device, help="cpu, 0, 0,1 (several GPUs train with DDP)")
    parser.add_argument("--resume", metavar="LAST.pt", type=checks.existing_file,
                        help="resume an interrupted run from its last.pt")
    parser.add_argument("--project", type=checks.output_dir, default=DEFAULTS["project_train"])
    parser.add_argument("--name", default=DEFAULTS["name"])
    parser.add_argument("--pretrained", metavar="WEIGHTS", type=checks.existing_file,
                        help="start from a spikedet checkpoint")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    parser.add_argument("--workers", type=checks.integer(0, what="a non-negative integer"), default=DEFAULTS["workers"])
    parser.add_argument("--plots", type=checks.boolean, default=True, help="ultralytics training plots (default: true)")
    parser.add_argument("--pretrained-darknet", metavar="WEIGHTS", type=checks.existing_file,
                        help="start the backbone from darknet weights (e.g. yolov3-tiny.weights into yolov3-tiny)")
    parser.add_argument("--darknet-cfg", metavar="CFG", type=checks.existing_file,
                        help="their cfg (default: the .cfg of the same name beside them)")
    model = parser.add_argument_group("model choices (default: from the model config)")
    model.add_argument("--scale", choices=("n", "s", "m"), help="width: n = 0.25, s = 0.5, m = 1.0")
    model.add_argument("--pool", choices=CHOICES["pool"], help="what the max-pool layers become")
    de = parser.add_argument_group("dual-error activation (default: from the model config)")
    de.add_argument("--levels", type=checks.positive, help="L: the time steps the SNN is meant to run")
    de.add_argument("--granularity", choices=CHOICES["granularity"], help="one lambda per layer or per channel")
    de.add_argument("--clip", type=checks.boolean, help="inject the clipping error (true/false)")
    de.add_argument("--quantize", type=checks.boolean, help="inject the quantization error (true/false)")
    de.add_argument("--relu", action="store_true", help="plain ReLU baseline: --clip false --quantize false")
    kd = parser.add_argument_group("distillation of a darknet network (--distill; labels not needed)")
    kd.add_argument("--distill", action="store_true",
                    help="fine-tune darknet --weights/--cfg into its dual-error copy, taught by the float network")
    kd.add_argument("--weights", type=checks.existing_file, help="the darknet .weights (the teacher)")
    kd.add_argument("--cfg", type=checks.existing_file, help="its .cfg")
    kd.add_argument("--names", type=checks.existing_file, help="its .names (default: beside the cfg)")
    kd.add_argument("--images", type=checks.existing_path, help="training images: a folder or a dataset YAML")
    kd.add_argument("--output", type=checks.output_file, help="the checkpoint to write")
    kd.add_argument("--lambda-only", action="store_true",
                    help="learn only the thresholds lambda (weights frozen): the calibration baseline")


@command("train", help="train a dual-error Tiny-YOLO with ultralytics' trainer")(_add_train_arguments)
def _run_train(args, parser):
    if args.distill:
        return _run_distill(args, parser)
    from .train import train

    if not args.data and not args.resume:
        parser.error("the following arguments are required: --data (or --resume)")
    dual_error = {k: getattr(args, k) for k in ("levels", "granularity", "clip", "quantize")
                  if getattr(args, k) is not None}
    if args.relu:
        dual_error.update(clip=False, quantize=False)
    options = dict(model=args.model, epochs=args.epochs or DEFAULTS["epochs"], imgsz=args.imgsz,
                   batch=args.batch or DEFAULTS["batch_train"],
                   device=args.device, resume=args.resume or False, project=args.project, name=args.name,
                   scale=args.scale, pool=args.pool, dual_error=dual_error, pretrained=args.pretrained,
                   pretrained_darknet=args.pretrained_darknet, darknet_cfg=args.darknet_cfg, seed=args.seed,
                   workers=args.workers, plots=args.plots)
    best = train(args.data, **{**options, **dict(args.overrides)})
    print(f"trained weights: {best}")


def _run_distill(args, parser):
    from .distill import distill

    missing = [f"--{k}" for k in ("weights", "cfg", "images", "output") if not getattr(args, k)]
    if missing:
        parser.error(f"--distill needs {', '.join(missing)}")
    if args.data or args.resume or args.pretrained:
        parser.error("--distill takes its images from --images (no --data, --resume or --pretrained)")
    best = distill(args.weights, args.cfg, args.images, args.output, levels=args.levels or DEFAULTS["levels_distill"],
                   epochs=args.epochs or DEFAULTS["epochs_distill"], imgsz=args.imgsz,
                   batch=args.batch or DEFAULTS["batch_distill"], lambda_only=args.lambda_only, seed=args.seed,
                   names=args.names, **dict(args.overrides))
    print(f"distilled weights: {best}")


# --- convert ------------------------------------------------------------------------------------------------


def _add_convert_arguments(parser):
    _network_arguments(parser, "trained ANN checkpoint (best.pt) or darknet .weights (with --cfg)")
    parser.add_argument("--output", required=True, type=checks.output_file, help="the SNN file to write")
    parser.add_argument("--calibration", metavar="DATA.yaml|DIR", type=checks.existing_path,
                        help="images for activation percentiles: a dataset YAML (its train split) or a folder; "
                             "needed unless every activation has a learned clip threshold")
    parser.add_argument("--calibration-count", type=checks.positive, default=DEFAULTS["calibration_count"],
                        help=f"images used (default: {DEFAULTS['calibration_count']})")
    parser.add_argument("--imgsz", type=checks.image_size, default=DEFAULTS["imgsz"])
    parser.add_argument("--normalization", choices=CHOICES["normalization"], default=DEFAULTS["normalization"])
    parser.add_argument("--percentile", type=checks.percentile, default=DEFAULTS["percentile"],
                        help=f"activation percentile, in (0, 100]; 100 = max (default: {DEFAULTS['percentile']})")
    parser.add_argument("--v-init", type=checks.fraction, default=DEFAULTS["v_init"],
                        help="initial membrane potential / threshold, in [0, 1]")
    parser.add_argument("--reset", choices=CHOICES["reset"], default=DEFAULTS["reset"])
    parser.add_argument("--spikes", choices=CHOICES["spikes"], default=DEFAULTS["spikes"],
                        help="events a neuron may emit per step (default: burst; binary = classic IF neurons, "
                             "for leaky units Spiking-YOLO's imbalanced threshold)")
    parser.add_argument("--leaky", choices=CHOICES["leaky"], default=DEFAULTS["leaky"],
                        help="leaky ReLU units: keep them (neurons with negative events) or replace them by ReLU")
    _timesteps_arguments(parser, None, "the T the SNN is meant for; default: the model's L")


@command("convert", help="convert a trained ANN checkpoint into a spiking network file")(_add_convert_arguments)
def _run_convert(args, parser):
    checks.check_timesteps([args.timesteps] if args.timesteps else [], args.allow_long_t, parser)
    snn = _open(args).convert(args.calibration, args.output, args.imgsz, args.calibration_count,
                              normalization=args.normalization, percentile=args.percentile, v_init=args.v_init,
                              reset=args.reset, spikes=args.spikes, leaky=args.leaky, timesteps=args.timesteps,
                              allow_long_t=args.allow_long_t)
    layers = len(snn.network.meta["scales"])
    print(f"converted {layers} spiking layers ({args.normalization}-wise normalization, {args.spikes} spikes)"
          f" -> {args.output}")


# --- eval ---------------------------------------------------------------------------------------------------


def _add_eval_arguments(parser):
    """Ground truth, then what to score (a detections file or a network), then where results go."""
    truth = parser.add_argument_group("ground truth (one of)").add_mutually_exclusive_group(required=True)
    truth.add_argument("--gt-coco", metavar="INSTANCES.json", type=checks.existing_file,
                       help="COCO instances file: the 12 COCOeval bbox metrics")
    truth.add_argument("--gt-voc", metavar="VOC_ROOT", type=checks.existing_dir,
                       help="a VOC tree such as VOCdevkit/VOC2007: devkit AP at IoU 0.5")
    voc = parser.add_argument_group("PASCAL VOC options")
    voc.add_argument("--split", default="test", help="image set ImageSets/Main/SPLIT.txt (default: test)")
    voc.add_argument("--data", metavar="DATASET.yaml", type=checks.existing_file,
                     help="take class names from this dataset config instead of the 20 VOC classes")
    scored = parser.add_argument_group("what to score (one of)").add_mutually_exclusive_group(required=True)
    scored.add_argument("--detections", metavar="DETS.json", type=checks.existing_file,
                        help="COCO results format: [{image_id, category_id, bbox: [x, y, w, h], score}, ...]")
    scored.add_argument("--weights", metavar="SNN_OR_ANN", type=checks.existing_file,
                        help="an SNN file (scored at each --timesteps, and its source ANN) or an ANN checkpoint")
    net = parser.add_argument_group("network options")
    net.add_argument("--cfg", type=checks.existing_file, help="darknet .cfg: --weights is then darknet .weights")
    net.add_argument("--names", type=checks.existing_file, help="darknet .names file")
    _timesteps_arguments(net, "+", "SNN read-out times, all from one simulation; default: "
                         + " ".join(map(str, DEFAULTS["timesteps_eval"])))
    net.add_argument("--images", metavar="DIR", type=checks.existing_dir,
                     help="image folder for --gt-coco (default: next to the JSON)")
    net.add_argument("--max-images", type=checks.positive, metavar="N",
                     help="score only the first N images (COCO: by image id; VOC: in the split's order)")
    net.add_argument("--batch", type=checks.positive,
                     help=f"images per batch (default: {DEFAULTS['batch_cpu']} on the CPU, {DEFAULTS['batch_gpu']} "
                          "on a GPU)")
    _stream_arguments(net, DEFAULTS["conf_eval"], f"default: {DEFAULTS['iou_eval_darknet']} for darknet networks, "
                      f"else {DEFAULTS['iou_eval']}")
    output = parser.add_argument_group("output")
    output.add_argument("--json", metavar="OUT.json", type=checks.output_file, help="also write the results here")
    output.add_argument("--plot", metavar="OUT.png", type=checks.output_file,
                        help="plot mAP against T here (with --weights)")
    output.add_argument("--verbose", action="store_true", help="show pycocotools' own output")


@command("eval", help="score detections, an ANN or an SNN against COCO or PASCAL VOC ground truth")(
    _add_eval_arguments)
def _run_eval(args, parser):
    from .fileio import atomic_write_json

    if args.gt_coco and args.data:
        parser.error(f"--data names VOC classes; COCO takes them from {args.gt_coco}")
    if args.detections and (args.max_images or args.plot or args.timesteps):
        parser.error("--max-images, --plot and --timesteps apply to --weights (a detections file is scored as it is)")
    checks.check_timesteps(args.timesteps, args.allow_long_t, parser)
    results = _score_network(args) if args.weights else _score_detections(args)
    if args.json and results is not None:
        atomic_write_json(args.json, results)


def _score_detections(args):
    from .data.records import VOC_CLASSES, load_class_names
    from .eval import evaluate_coco, evaluate_voc
    from .eval.report import format_coco_table, format_voc_table

    if args.gt_coco:
        results = {"coco": evaluate_coco(args.gt_coco, args.detections, verbose=args.verbose)}
        print(format_coco_table(results["coco"]))
    else:
        class_names = load_class_names(args.data) if args.data else VOC_CLASSES
        results = evaluate_voc(args.gt_voc, args.split, args.detections, class_names)
        print(format_voc_table(results))
    return results


def _score_network(args):
    from .distributed import init_from_env
    from .eval.report import format_smallest_t, format_sweep_table, format_timing, plot_sweep, smallest_t

    args.device = init_from_env(args.device)
    model = _open(args)
    results = model.val(args.gt_coco, args.gt_voc, args.split, args.data, args.images,
                        args.timesteps, args.max_images, batch=args.batch,
                        **_stream_options(args))
    if results is None:  # a torchrun process other than rank 0: rank 0 reports
        return None
    results["smallest_t"] = smallest_t(results)
    print(format_sweep_table(results))
    print(format_smallest_t(results["smallest_t"]))
    print(format_timing(results))
    if args.plot:
        plot_sweep(results, args.plot, title=f"{args.weights}")
    return results


# --- detect -------------------------------------------------------------------------------------------------


def _add_detect_arguments(parser):
    parser.add_argument("--source", required=True, help="an image, a folder, a glob pattern or a video file")
    _network_arguments(parser, "an SNN file, an ANN checkpoint or darknet .weights (with --cfg)")
    _timesteps_arguments(parser, None, "default: the T it was converted for")
    _stream_arguments(parser, DEFAULTS["conf_detect"], f"default: {DEFAULTS['iou_detect']}")
    parser.set_defaults(iou=DEFAULTS["iou_detect"])
    parser.add_argument("--project", type=checks.output_dir, default=DEFAULTS["project_detect"])
    parser.add_argument("--name", default=DEFAULTS["name"], help="run folder name; exp2, exp3, ... when taken")
    parser.add_argument("--save-txt", action="store_true", help="also write YOLO txt labels per image")
    parser.add_argument("--save-rates", action="store_true", help="SNN: write per-layer firing rates")


@command("detect", help="detect objects in images or videos and save annotated copies")(_add_detect_arguments)
def _run_detect(args, parser):
    if args.save_rates and args.method == "closed-form":
        parser.error("--save-rates counts spikes step by step: it needs --method steps (the default with it)")
    checks.check_timesteps([args.timesteps] if args.timesteps else [], args.allow_long_t, parser)
    summary = _open(args).predict(args.source, args.timesteps, save=True, project=args.project, name=args.name,
                                  save_txt=args.save_txt, save_rates=args.save_rates, **_stream_options(args))
    print(f"{summary.images} images, {summary.detections} detections, {len(summary.skipped)} files skipped"
          f" -> {summary.output}")
    for line in summary.skipped:
        print(f"  skipped {line}")


# --- demo ---------------------------------------------------------------------------------------------------


def _add_demo_arguments(parser):
    parser.add_argument("--output", default="runs/demo")
    parser.add_argument("--epochs", type=checks.positive, help="training epochs (default: spikedet.demo.DEMO)")
    parser.add_argument("--timesteps", type=checks.timesteps, nargs="+", help="SNN read-out times (default: DEMO)")


@command("demo", help="the whole pipeline on the embedded shapes data: data, train, convert, score, detect")(
    _add_demo_arguments)
def _run_demo(args, parser):
    from .demo import run_demo

    given = {k: getattr(args, k) for k in ("epochs", "timesteps") if getattr(args, k) is not None}
    run_demo(args.output, **given)
