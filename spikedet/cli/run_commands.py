"""`spikedet convert`, `eval`, `plot`, `detect` and `demo`: from a trained network to scores and detections."""
from pathlib import Path

from .. import checks
from ..defaults import CHOICES, DEFAULTS, DEMO
from ..interrupts import sigterm_raises
from . import (_network_arguments, _open, _run_folder_arguments, _stream_arguments, _stream_options,
               _timesteps_arguments, command)


# --- convert ------------------------------------------------------------------------------------------------


def _add_convert_arguments(parser):
    _network_arguments(parser, "trained ANN checkpoint (best.pt) or darknet .weights (with --cfg)")
    parser.add_argument("--output", required=True, type=checks.output_file, help="the SNN file to write")
    parser.add_argument("--calibration", metavar="DATA.yaml|DIR", type=checks.existing_path,
                        help="images for activation percentiles: a dataset YAML (its train split) or a folder; "
                             "needed unless every activation has a learned clip threshold")
    parser.add_argument("--calibration-count", type=checks.positive, default=DEFAULTS["calibration_count"],
                        help=f"images used (default: {DEFAULTS['calibration_count']})")
    parser.add_argument("--imgsz", type=checks.image_size,
                        help="input size the SNN is built and calibrated for (default: the size the ANN was "
                             f"trained at, else {DEFAULTS['imgsz']})")
    parser.add_argument("--normalization", choices=CHOICES["normalization"], default=DEFAULTS["normalization"],
                        help="one threshold scale per output channel (Spiking-YOLO) or per layer (default: "
                             f"{DEFAULTS['normalization']})")
    parser.add_argument("--scales", choices=CHOICES["scales"], default=DEFAULTS["scales"],
                        help="thresholds of layers without a learned one: a --percentile of the calibration "
                        "activations, or mse: the least mean squared error of the neurons' count after --timesteps "
                        "steps (much better at a few steps)")
    parser.add_argument("--percentile", type=checks.percentile, default=DEFAULTS["percentile"],
                        help=f"activation percentile, in (0, 100]; 100 = max (default: {DEFAULTS['percentile']})")
    parser.add_argument("--threshold-scale", type=checks.threshold_scale, default=DEFAULTS["threshold_scale"],
                        help="every threshold times this: higher clips less and quantizes coarser, so the best "
                        "value depends on T (choose it on held-out images: distill-loss --threshold-scales; "
                        f"default: {DEFAULTS['threshold_scale']})")
    parser.add_argument("--first-copies", type=checks.first_copies, metavar="K",
                        help="K neurons per channel in the first layer, with staggered initial potentials: K * T "
                        "levels in T steps for K times its spikes (default: what the network was trained for, else 1)")
    parser.add_argument("--negative-events", choices=CHOICES["negative_events"],
                        help="leaky neurons' negative events: whole (worth a positive one) or fine (worth the slope "
                        "alpha: the negative side at a finer step; burst neurons) (default: fine for burst neurons "
                        "of a network trained for it, else whole)")
    parser.add_argument("--v-init", type=checks.fraction, default=DEFAULTS["v_init"],
                        help=f"initial membrane potential / threshold, in [0, 1] (default: {DEFAULTS['v_init']})")
    parser.add_argument("--reset", choices=CHOICES["reset"], default=DEFAULTS["reset"],
                        help=f"after a spike: subtract the threshold, or set the potential to zero (default: "
                             f"{DEFAULTS['reset']})")
    parser.add_argument("--spikes", choices=CHOICES["spikes"], default=DEFAULTS["spikes"],
                        help="events a neuron may emit per step (default: burst; binary = classic IF neurons, "
                             "for leaky units Spiking-YOLO's imbalanced threshold)")
    parser.add_argument("--leaky", choices=CHOICES["leaky"], default=DEFAULTS["leaky"],
                        help="leaky ReLU units: keep them (neurons with negative events) or replace them by ReLU")
    _timesteps_arguments(parser, None, "the T the SNN is meant for; default: the model's L")


@command("convert", help="convert a trained ANN checkpoint into a spiking network file")(_add_convert_arguments)
def _run_convert(args, parser):
    checks.check_timesteps([args.timesteps] if args.timesteps else [], args.allow_long_t, parser)
    if args.calibration:  # the one long silent step of a conversion: say what it does before it starts
        print(f"calibrating: {args.scales} thresholds from up to {args.calibration_count} images of "
              f"{args.calibration}" + (" (a search per layer: minutes on a CPU)" if args.scales == "mse" else ""),
              flush=True)
    with sigterm_raises():
        snn = _open(args).convert(args.calibration, args.output, args.imgsz, args.calibration_count,
                                  normalization=args.normalization, scales=args.scales,
                                  percentile=args.percentile, threshold_scale=args.threshold_scale,
                                  v_init=args.v_init, reset=args.reset, first_copies=args.first_copies,
                                  negative_events=args.negative_events, spikes=args.spikes, leaky=args.leaky,
                                  timesteps=args.timesteps, allow_long_t=args.allow_long_t)
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
    voc.add_argument("--split", default=DEFAULTS["voc_split"],
                     help=f"image set ImageSets/Main/SPLIT.txt (default: {DEFAULTS['voc_split']})")
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
    net.add_argument("--reference", metavar="WEIGHTS", type=checks.existing_file,
                     help="score the SNN against this network instead of its source ANN, e.g. darknet's float "
                          ".weights (with --reference-cfg, or --cfg when --weights is a spikedet file)")
    net.add_argument("--reference-cfg", metavar="CFG", type=checks.existing_file, help="darknet .cfg of --reference")
    net.add_argument("--float", action="store_true",
                     help="score a dual-error ANN checkpoint with both errors off (plain (leaky) ReLU units): the "
                          "float network, what fine-tuning for the SNN cost it")
    _calibration_argument(net)
    net.add_argument("--allow-partial", action="store_true",
                     help="score even when some of the network's classes are not in the ground truth (the scores "
                          "then count only the classes both have)")
    net.add_argument("--selection-of", metavar="CHECKPOINT", type=checks.existing_file,
                     help="score only the images this distilled checkpoint held out of training (its selection "
                          "images; they must be in the ground truth, e.g. labelled COCO train images)")
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
    output.add_argument("--save-detections", metavar="DIR", type=checks.output_dir,
                        help="also write the detections scored (--weights) into this folder: ann.json for the ANN "
                             "row, tT.json for the SNN at T (for `compare`'s intervals); none may exist yet")
    output.add_argument("--verbose", action="store_true",
                        help="show pycocotools' own output (scoring a --detections file against --gt-coco)")


@command("eval", help="score detections, an ANN or an SNN against COCO or PASCAL VOC ground truth")(
    _add_eval_arguments)
def _run_eval(args, parser):
    from ..fileio import atomic_write_json

    if args.cfg and Path(args.weights or "").suffix != ".weights":  # the cfg is the reference's
        if not args.reference or args.reference_cfg:
            parser.error("--cfg goes with darknet .weights (--weights or --reference)")
        args.reference_cfg, args.cfg = args.cfg, None

    if args.gt_coco and args.data:
        parser.error(f"--data names VOC classes; COCO takes them from {args.gt_coco}")
    if args.detections and (args.max_images or args.plot or args.timesteps or args.save_detections
                            or args.selection_of):
        parser.error("--max-images, --selection-of, --plot, --timesteps and --save-detections apply to --weights "
                     "(a detections file is scored as it is)")
    if args.verbose and not (args.detections and args.gt_coco):
        parser.error("--verbose shows pycocotools' output when scoring a --detections file against --gt-coco")
    checks.check_timesteps(args.timesteps, args.allow_long_t, parser)
    from ..distributed import together

    with sigterm_raises(), together():
        results = _score_network(args) if args.weights else _score_detections(args)
        if args.json and results is not None:
            atomic_write_json(args.json, results, replace=False)


def _selection_images(checkpoint):
    """The held-out images a distilled checkpoint names, or None (score every image)."""
    if checkpoint is None:
        return None
    from ..distill.images import selection_images_of

    return selection_images_of(checkpoint)


def _score_detections(args):
    from ..data.records import VOC_CLASSES, load_class_names
    from ..eval import evaluate_coco, evaluate_voc
    from ..eval.report import format_coco_table, format_voc_table

    if args.gt_coco:
        results = {"coco": evaluate_coco(args.gt_coco, args.detections, verbose=args.verbose)}
        print(format_coco_table(results["coco"]))
    else:
        class_names = load_class_names(args.data) if args.data else VOC_CLASSES
        results = evaluate_voc(args.gt_voc, args.split, args.detections, class_names)
        print(format_voc_table(results))
    return results


def _score_network(args):
    from ..distributed import init_from_env
    from ..eval.report import plot_sweep

    args.device = init_from_env(args.device)
    network = _open(args)
    if args.float:
        from ..distill import set_levels
        from ..errors import fail

        if network.is_snn or args.timesteps or args.reference:
            raise fail(args.weights, "--float scores an ANN checkpoint alone (no SNN file, --timesteps or "
                                     "--reference)")
        set_levels(network.network, None)
    results = network.val(args.gt_coco, args.gt_voc, args.split, args.data, args.images,
                          args.timesteps, args.max_images, allow_partial=args.allow_partial,
                          reference=args.reference, reference_cfg=args.reference_cfg,
                          calibration=args.calibration, batch=args.batch, save_detections=args.save_detections,
                          only_images=_selection_images(args.selection_of),
                          **_stream_options(args))
    if results is not None and args.float:
        results["run"]["errors"] = "off: the float network"
    if results is not None and args.plot:  # None: a torchrun process other than rank 0 (rank 0 reports)
        plot_sweep(results, args.plot, title=f"{args.weights}")
    return results


# --- compare ------------------------------------------------------------------------------------------------


def _add_compare_arguments(parser):
    parser.add_argument("detections", nargs="+", metavar="DETS.json", type=checks.existing_file,
                        help="detections files (`eval --save-detections`); the others are compared with the first")
    parser.add_argument("--gt-coco", metavar="INSTANCES.json", type=checks.existing_file, required=True,
                        help="the COCO instances file they were scored on")
    parser.add_argument("--labels", nargs="+", help="one per detections file (default: the file names)")
    parser.add_argument("--selection-of", metavar="CHECKPOINT", type=checks.existing_file,
                        help="draw only the images this distilled checkpoint held out (as `eval --selection-of` "
                             "scored them; default: every image of the ground truth)")
    parser.add_argument("--metric", default="AP50", help="a COCOeval figure over objects of every size: AP50 "
                        "(default), AP, AP75, AR1, AR10, AR100")
    parser.add_argument("--resamples", type=checks.integer(1, 100000), default=1000,
                        help="image draws (default: 1000)")
    parser.add_argument("--seed", type=checks.integer(0, 2**32 - 1), default=0, help="of the draws (default: 0)")
    parser.add_argument("--level", type=checks.number(0, 0.999, low_open=True), default=0.95,
                        help="of the intervals (default: 0.95)")
    parser.add_argument("--json", metavar="OUT.json", type=checks.output_file, help="also write the figures here")


@command("compare", help="COCO AP of detections files with intervals from paired image draws (the bootstrap): "
                         "how sure a difference between networks is")(_add_compare_arguments)
def _run_compare(args, parser):
    from ..eval.bootstrap import bootstrap_coco, format_bootstrap
    from ..fileio import atomic_write_json

    labels = args.labels or [str(p) for p in args.detections]
    if len(labels) != len(args.detections) or len(set(labels)) != len(labels):
        parser.error(f"{len(args.detections)} detections files need as many different labels, got {labels}")
    image_ids = None
    if args.selection_of:
        from ..validate import GroundTruth

        image_ids = GroundTruth.image_ids_of(args.gt_coco, _selection_images(args.selection_of))
    result = bootstrap_coco(args.gt_coco, dict(zip(labels, args.detections)), args.resamples, args.seed,
                            args.metric, args.level, image_ids)
    print(format_bootstrap(result))
    if args.json:
        atomic_write_json(args.json, result, replace=False)


# --- plot ---------------------------------------------------------------------------------------------------


def _add_plot_arguments(parser):
    parser.add_argument("results", nargs="+", metavar="RESULTS.json", type=checks.existing_file,
                        help="sweeps written by `eval --weights ... --json`")
    parser.add_argument("--labels", nargs="+", help="one per results file (default: the file names)")
    parser.add_argument("--metric", help="mAP50 or mAP50_95 (COCO), voc07 or voc10 (VOC); default: the first")
    parser.add_argument("--reference", type=checks.number(0, 1), help="a score to draw as a line, e.g. the float "
                        "network's")
    parser.add_argument("--title")
    parser.add_argument("--output", required=True, metavar="OUT.png", type=checks.output_file)


@command("plot", help="plot several eval sweeps (mAP against T) in one figure")(_add_plot_arguments)
def _run_plot(args, parser):
    from ..errors import fail
    from ..eval.report import plot_sweeps
    from ..fileio import read_json

    labels = args.labels or [Path(p).stem for p in args.results]
    if len(labels) != len(args.results):
        parser.error(f"{len(args.results)} results files but {len(labels)} labels")
    runs = {}
    for label, path in zip(labels, args.results):
        results = read_json(path, "eval results")
        if not isinstance(results, dict) or not ("snn" in results or "ann" in results):
            raise fail(path, "not an eval sweep (expected the JSON of `eval --weights ... --json`)")
        runs[label] = results
    plot_sweeps(runs, args.output, args.metric, args.reference, args.title)
    print(f"plot: {args.output}")


# --- detect -------------------------------------------------------------------------------------------------


def _add_detect_arguments(parser):
    parser.add_argument("--source", required=True, help="an image, a folder, a glob pattern or a video file")
    _network_arguments(parser, "an SNN file, an ANN checkpoint or darknet .weights (with --cfg)")
    _timesteps_arguments(parser, None, "default: the T it was converted for")
    _stream_arguments(parser, DEFAULTS["conf_detect"], f"default: {DEFAULTS['iou_detect']}")
    parser.set_defaults(iou=DEFAULTS["iou_detect"])
    _run_folder_arguments(parser, DEFAULTS["project_detect"])
    parser.add_argument("--gt-coco", metavar="INSTANCES.json", type=checks.existing_file,
                        help="the COCO annotation file of these images: detections.json then carries its image and "
                             "category ids, so `eval --detections` scores it as written")
    parser.add_argument("--save-txt", action="store_true",
                        help="also write YOLO txt labels per image (labels/NAME.txt, as ultralytics)")
    parser.add_argument("--save-rates", action="store_true",
                        help="SNN: write per-layer firing rates, SOPs and the energy estimate (runs the step "
                             "simulation: slower than the closed form of burst neurons)")
    _calibration_argument(parser)


@command("detect", help="detect objects in images or videos and save annotated copies")(_add_detect_arguments)
def _run_detect(args, parser):
    if args.save_rates and args.method == "closed-form":
        parser.error("--save-rates counts spikes step by step: it needs --method steps (the default with it)")
    checks.check_timesteps([args.timesteps] if args.timesteps else [], args.allow_long_t, parser)
    if args.save_rates and not args.method:
        print("--save-rates: spikes are counted step by step, so the SNN runs the step simulation (burst networks "
              "otherwise use the faster closed form)")
    with sigterm_raises():
        summary = _open(args).predict(args.source, args.timesteps, save=True, project=args.project,
                                      name=args.name, save_txt=args.save_txt, save_rates=args.save_rates,
                                      calibration=args.calibration, gt_coco=args.gt_coco, **_stream_options(args))
    print(f"ran: {summary.ran}")
    print(f"{summary.images} images, {summary.detections} detections, {len(summary.skipped)} files skipped"
          f" -> {summary.output}")
    if summary.unmatched:
        print(f"  {len(summary.unmatched)} images are not in {args.gt_coco} (named by their key in detections.json),"
              f" e.g. {summary.unmatched[0]}")
    for line in summary.skipped:
        print(f"  skipped {line}")


def _calibration_argument(parser):
    parser.add_argument("--calibration", metavar="DATA.yaml|DIR", type=checks.existing_path,
                        help="for an ANN without learned thresholds run as an SNN (--timesteps): images its "
                             "thresholds are taken from, as `convert --calibration` (convert --scales mse is more "
                             "accurate at few steps)")


# --- demo ---------------------------------------------------------------------------------------------------


def _add_demo_arguments(parser):
    parser.add_argument("--output", default="runs/demo", help="output folder (default: runs/demo)")
    parser.add_argument("--epochs", type=checks.positive, help=f"training epochs (default: {DEMO['epochs']})")
    parser.add_argument("--timesteps", type=checks.timesteps, nargs="+",
                        help="SNN read-out times (default: " + " ".join(map(str, DEMO["timesteps"])) + ")")


@command("demo", help="the whole pipeline on the embedded shapes data: data, train, convert, score, detect")(
    _add_demo_arguments)
def _run_demo(args, parser):
    from ..demo import run_demo

    given = {k: getattr(args, k) for k in ("epochs", "timesteps") if getattr(args, k) is not None}
    run_demo(args.output, **given)
