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


def _add_darknet_arguments(parser):
    parser.add_argument("--cfg", help="darknet .cfg: --weights is then a darknet .weights file")
    parser.add_argument("--names", help="darknet .names file (default: coco.names / voc.names beside the cfg)")


# Subcommands live below, one block each, in pipeline order.


# --- data ---------------------------------------------------------------------------------------------------


def _add_data_arguments(parser):
    parser.add_argument("--root", default="data/shapes", help="output folder (default: data/shapes)")
    parser.add_argument("--imgsz", type=int, default=192, help="image side in pixels (default: 192)")
    parser.add_argument("--train", type=int, default=320, help="training images (default: 320)")
    parser.add_argument("--val", type=int, default=80, help="validation images (default: 80)")
    parser.add_argument("--test", type=int, default=80, help="test images (default: 80)")
    parser.add_argument("--seed", type=int, default=0)


@command("data", help="make the embedded shapes dataset in VOC, COCO and ultralytics YOLO layouts")(
    _add_data_arguments)
def _run_data(args):
    from .data.shapes import make_shapes_dataset

    paths = make_shapes_dataset(args.root, imgsz=args.imgsz, seed=args.seed,
                                counts={"train": args.train, "val": args.val, "test": args.test})
    print(f"VOC:  {paths['voc']}\nCOCO: {paths['coco']['test'].parent}\nYOLO: {paths['yolo']}")


# --- train --------------------------------------------------------------------------------------------------


def _bool(text):
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _key_value(text):
    """An ultralytics training argument given as key=value; the value is read as YAML (0.001, false, AdamW)."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected key=value (an ultralytics train argument), got {text!r}")
    return key, yaml.safe_load(value)


def _add_train_arguments(parser):
    parser.add_argument("overrides", nargs="*", type=_key_value, metavar="key=value",
                        help="other ultralytics train arguments, e.g. optimizer=AdamW lr0=0.001 mosaic=0")
    parser.add_argument("--data", required=True, help="ultralytics dataset YAML (e.g. data/shapes/yolo/shapes.yaml)")
    parser.add_argument("--model", default="yolov3-tiny", help="model config name or YAML (configs/)")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--imgsz", type=int, default=416)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", help="cpu, 0, 0,1 (several GPUs train with DDP)")
    parser.add_argument("--resume", metavar="LAST.pt", help="resume an interrupted run from its last.pt")
    parser.add_argument("--project", default="runs/train")
    parser.add_argument("--name", default="exp")
    parser.add_argument("--pretrained", metavar="WEIGHTS", help="start from these weights")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--plots", type=_bool, default=True, help="ultralytics training plots (default: true)")
    parser.add_argument("--pretrained-darknet", metavar="WEIGHTS",
                        help="start the backbone from darknet weights (e.g. yolov3-tiny.weights into yolov3-tiny)")
    parser.add_argument("--darknet-cfg", metavar="CFG",
                        help="their cfg (default: the .cfg of the same name beside them)")
    model = parser.add_argument_group("model choices (default: from the model config)")
    model.add_argument("--scale", choices=("n", "s", "m"), help="width: n = 0.25, s = 0.5, m = 1.0")
    model.add_argument("--pool", choices=("max", "avg", "conv"), help="what the max-pool layers become")
    de = parser.add_argument_group("dual-error activation (default: from the model config)")
    de.add_argument("--levels", type=int, help="L: the time steps the SNN is meant to run")
    de.add_argument("--granularity", choices=("layer", "channel"), help="one lambda per layer or per channel")
    de.add_argument("--clip", type=_bool, help="inject the clipping error (true/false)")
    de.add_argument("--quantize", type=_bool, help="inject the quantization error (true/false)")
    de.add_argument("--relu", action="store_true", help="plain ReLU baseline: --clip false --quantize false")


@command("train", help="train a dual-error Tiny-YOLO with ultralytics' trainer")(_add_train_arguments)
def _run_train(args):
    from .train import train

    dual_error = {k: getattr(args, k) for k in ("levels", "granularity", "clip", "quantize")
                  if getattr(args, k) is not None}
    if args.relu:
        dual_error.update(clip=False, quantize=False)
    options = dict(data=args.data, model=args.model, epochs=args.epochs, imgsz=args.imgsz, batch=args.batch,
                   device=args.device, resume=args.resume or False, project=args.project, name=args.name,
                   scale=args.scale, pool=args.pool, dual_error=dual_error, pretrained=args.pretrained,
                   pretrained_darknet=args.pretrained_darknet, darknet_cfg=args.darknet_cfg, seed=args.seed,
                   workers=args.workers, plots=args.plots)
    best = train(**{**options, **dict(args.overrides)})
    print(f"trained weights: {best}")


# --- convert ------------------------------------------------------------------------------------------------


def _add_convert_arguments(parser):
    parser.add_argument("--weights", required=True, help="trained ANN checkpoint (best.pt) or darknet .weights")
    _add_darknet_arguments(parser)
    parser.add_argument("--output", required=True, help="the SNN file to write")
    parser.add_argument("--calibration", metavar="DATA.yaml|DIR",
                        help="images for activation percentiles: a dataset YAML (its train split) or a folder; "
                             "needed unless every activation has a learned clip threshold")
    parser.add_argument("--calibration-count", type=int, default=32, help="images used (default: 32)")
    parser.add_argument("--imgsz", type=int, default=416)
    parser.add_argument("--normalization", choices=("channel", "layer"), default="channel")
    parser.add_argument("--percentile", type=float, default=99.99, help="activation percentile (100 = max)")
    parser.add_argument("--v-init", type=float, default=0.5, help="initial membrane potential / threshold")
    parser.add_argument("--reset", choices=("subtract", "zero"), default="subtract")
    parser.add_argument("--spikes", choices=("burst", "signed", "binary"), default="burst",
                        help="events a neuron may emit per step (default: burst; binary = classic IF neurons, "
                             "for leaky units Spiking-YOLO's imbalanced threshold)")
    parser.add_argument("--leaky", choices=("keep", "relu"), default="keep",
                        help="leaky ReLU units: keep them (neurons with negative events) or replace them by ReLU")
    parser.add_argument("--timesteps", type=int, help="the T the SNN is meant for (default: the model's L)")


@command("convert", help="convert a trained ANN checkpoint into a spiking network file")(_add_convert_arguments)
def _run_convert(args):
    from .convert import convert_checkpoint

    snn = convert_checkpoint(args.weights, args.output, calibration=args.calibration, imgsz=args.imgsz,
                             calibration_count=args.calibration_count, normalization=args.normalization,
                             percentile_q=args.percentile, v_init=args.v_init, reset=args.reset,
                             spikes=args.spikes, timesteps=args.timesteps, leaky=args.leaky, cfg=args.cfg,
                             names=args.names)
    layers = len(snn.meta["scales"])
    print(f"converted {layers} spiking layers ({args.normalization}-wise normalization, {args.spikes} spikes)"
          f" -> {args.output}")


# --- eval ---------------------------------------------------------------------------------------------------


def _add_eval_arguments(parser):
    """Ground truth, then what to score (a detections file or a network), then where results go."""
    truth = parser.add_argument_group("ground truth (one of)").add_mutually_exclusive_group(required=True)
    truth.add_argument("--gt-coco", metavar="INSTANCES.json",
                       help="COCO instances file: the 12 COCOeval bbox metrics")
    truth.add_argument("--gt-voc", metavar="VOC_ROOT",
                       help="a VOC tree such as VOCdevkit/VOC2007: devkit AP at IoU 0.5")
    voc = parser.add_argument_group("PASCAL VOC options")
    voc.add_argument("--split", default="test", help="image set ImageSets/Main/SPLIT.txt (default: test)")
    voc.add_argument("--data", metavar="DATASET.yaml",
                     help="take class names from this dataset config instead of the 20 VOC classes")
    scored = parser.add_argument_group("what to score (one of)").add_mutually_exclusive_group(required=True)
    scored.add_argument("--detections", metavar="DETS.json",
                        help="COCO results format: [{image_id, category_id, bbox: [x, y, w, h], score}, ...]")
    scored.add_argument("--weights", metavar="SNN_OR_ANN",
                        help="an SNN file (scored at each --timesteps, and its source ANN) or an ANN checkpoint")
    net = parser.add_argument_group("network options")
    _add_darknet_arguments(net)
    net.add_argument("--timesteps", type=int, nargs="+", default=[8, 16, 32, 64, 128, 256],
                     help="SNN read-out times, all from one simulation (default: 8 16 32 64 128 256)")
    net.add_argument("--images", metavar="DIR", help="image folder for --gt-coco (default: next to the JSON)")
    net.add_argument("--max-images", type=int, metavar="N",
                     help="score only the first N images (COCO: by image id; VOC: in the split's order)")
    net.add_argument("--imgsz", type=int, help="network input size (default: the size the SNN was converted at)")
    net.add_argument("--batch", type=int, help="images per batch (default: 1 on the CPU, faster there; 8 on a GPU)")
    net.add_argument("--chunk", type=int, help="time steps simulated per batched layer call (default: 2)")
    net.add_argument("--resize", choices=("letterbox", "stretch"),
                     help="default: stretch for darknet networks, letterbox for spikedet-trained ones")
    net.add_argument("--conf", type=float, default=0.001, help="score threshold (default: 0.001, as for mAP)")
    net.add_argument("--iou", type=float, help="NMS IoU threshold (default: 0.45 for darknet networks, else 0.7)")
    net.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    output = parser.add_argument_group("output")
    output.add_argument("--json", metavar="OUT.json", help="also write the results here")
    output.add_argument("--plot", metavar="OUT.png", help="plot mAP against T here (with --weights)")
    output.add_argument("--verbose", action="store_true", help="show pycocotools' own output")


@command("eval", help="score detections, an ANN or an SNN against COCO or PASCAL VOC ground truth")(
    _add_eval_arguments)
def _run_eval(args):
    from .data.records import VOC_CLASSES, load_class_names
    from .fileio import atomic_write_json

    if args.gt_coco and args.data:
        raise SpikedetError(f"{args.data}: --data names VOC classes; COCO takes them from {args.gt_coco}")
    if args.detections and args.max_images:
        raise SpikedetError("--max-images applies to --weights (a detections file is scored as it is)")
    class_names = load_class_names(args.data) if args.data else VOC_CLASSES
    results = _score_network(args, class_names) if args.weights else _score_detections(args, class_names)
    if args.json:
        atomic_write_json(args.json, results)


def _score_detections(args, class_names):
    from .eval import evaluate_coco, evaluate_voc
    from .eval.report import format_coco_table, format_voc_table

    if args.gt_coco:
        results = {"coco": evaluate_coco(args.gt_coco, args.detections, verbose=args.verbose)}
        print(format_coco_table(results["coco"]))
    else:
        results = evaluate_voc(args.gt_voc, args.split, args.detections, class_names)
        print(format_voc_table(results))
    return results


def _score_network(args, class_names):
    from .eval.report import format_sweep_table, plot_sweep
    from .predict import load_network
    from .validate import evaluate_networks

    network, source_ann = load_network(args.weights, args.cfg, args.names)
    imgsz = args.imgsz or getattr(network, "meta", {}).get("imgsz") or 416
    results = evaluate_networks(
        (source_ann, network) if source_ann is not None else (network,), imgsz, timesteps=args.timesteps,
        max_images=args.max_images, gt_coco=args.gt_coco, gt_voc=args.gt_voc, split=args.split,
        images_dir=args.images, voc_class_names=class_names, batch_size=args.batch, resize=args.resize,
        conf=args.conf, iou=args.iou, device=args.device, **({"chunk": args.chunk} if args.chunk else {}))
    print(format_sweep_table(results))
    timing = results["seconds_per_image"]
    parts = [f"ANN {timing['ann']:.3f} s"] if "ann" in timing else []
    if "snn" in timing:
        parts.append(f"SNN {timing['snn']:.2f} s for {max(int(t) for t in results['snn'])} steps")
    print("wall time per image: " + ", ".join(parts))
    if args.plot:
        plot_sweep(results, args.plot, title=f"{args.weights}")
    return results


# --- detect -------------------------------------------------------------------------------------------------


def _add_detect_arguments(parser):
    parser.add_argument("--source", required=True, help="an image, a folder, a glob pattern or a video file")
    parser.add_argument("--weights", required=True, help="an SNN file, an ANN checkpoint or darknet .weights")
    _add_darknet_arguments(parser)
    parser.add_argument("--timesteps", type=int, help="SNN time steps (default: the T it was converted for)")
    parser.add_argument("--conf", type=float, default=0.25, help="score threshold (default: 0.25)")
    parser.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold (default: 0.45)")
    parser.add_argument("--imgsz", type=int, help="network input size (default: the SNN's, else 416)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--project", default="runs/detect")
    parser.add_argument("--name", default="exp", help="run folder name; exp2, exp3, ... when taken")
    parser.add_argument("--save-txt", action="store_true", help="also write YOLO txt labels per image")
    parser.add_argument("--save-rates", action="store_true", help="SNN: write per-layer firing rates")


@command("detect", help="detect objects in images or videos and save annotated copies")(_add_detect_arguments)
def _run_detect(args):
    from .detect import detect

    summary = detect(args.source, args.weights, timesteps=args.timesteps, conf=args.conf, iou=args.iou,
                     imgsz=args.imgsz, device=args.device, project=args.project, name=args.name,
                     save_txt=args.save_txt, save_rates=args.save_rates, cfg=args.cfg, names=args.names)
    print(f"{summary.images} images, {summary.detections} detections, {len(summary.skipped)} files skipped"
          f" -> {summary.output}")
    for line in summary.skipped:
        print(f"  skipped {line}")


# --- demo ---------------------------------------------------------------------------------------------------


def _add_demo_arguments(parser):
    parser.add_argument("--output", default="runs/demo")
    parser.add_argument("--epochs", type=int, help="training epochs (default: spikedet.demo.DEMO)")
    parser.add_argument("--timesteps", type=int, nargs="+", help="SNN read-out times (default: DEMO)")


@command("demo", help="the whole pipeline on the embedded shapes data: data, train, convert, score, detect")(
    _add_demo_arguments)
def _run_demo(args):
    from .demo import run_demo

    given = {k: getattr(args, k) for k in ("epochs", "timesteps") if getattr(args, k) is not None}
    run_demo(args.output, **given)
