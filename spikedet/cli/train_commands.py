"""`spikedet data` and `spikedet train` (ultralytics training, or distillation of a darknet network)."""
import sys
from pathlib import Path

from .. import checks
from ..defaults import CHOICES, DEFAULTS
from ..distill_options import OPTIONS as DISTILL_OPTIONS, SESSION_OPTIONS
from ..errors import SpikedetError
from . import _run_folder_arguments, command


# --- data ---------------------------------------------------------------------------------------------------


def _add_data_arguments(parser):
    parser.add_argument("--root", default="data/shapes", help="output folder (default: data/shapes)")
    parser.add_argument("--imgsz", type=checks.image_size, default=192, help="image side in pixels (default: 192)")
    for split, n in (("train", 320), ("val", 80), ("test", 80)):
        parser.add_argument(f"--{split}", type=checks.positive, default=n, help=f"{split} images (default: {n})")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"], help=f"random seed (default: {DEFAULTS['seed']})")


@command("data", help="make the embedded shapes dataset in VOC, COCO and ultralytics YOLO layouts")(
    _add_data_arguments)
def _run_data(args, parser):
    from ..data.shapes import make_shapes_dataset

    paths = make_shapes_dataset(args.root, imgsz=args.imgsz, seed=args.seed,
                                counts={"train": args.train, "val": args.val, "test": args.test})
    print(f"VOC:  {paths['voc']}\nCOCO: {paths['coco']['test'].parent}\nYOLO: {paths['yolo']}")


# --- train --------------------------------------------------------------------------------------------------


def _add_train_arguments(parser):
    parser.add_argument("overrides", nargs="*", type=checks.key_value, metavar="key=value",
                        help="other ultralytics train arguments, e.g. optimizer=AdamW lr0=0.001 mosaic=0; with "
                        "--distill, its options: " + ", ".join(DISTILL_OPTIONS) + " (e.g. steps=3000 "
                        "selection=200 max_minutes=60); with --distill --resume only " + ", ".join(SESSION_OPTIONS))
    parser.add_argument("--data", type=checks.existing_file,
                        help="ultralytics dataset YAML (e.g. data/shapes/yolo/shapes.yaml)")
    parser.add_argument("--model", default=DEFAULTS["model"], help="model config name or YAML (configs/)")
    parser.add_argument("--epochs", type=checks.positive,
                        help=f"default: {DEFAULTS['epochs']} ({DEFAULTS['epochs_distill']} with --distill)")
    parser.add_argument("--imgsz", type=checks.image_size, default=DEFAULTS["imgsz"],
                        help=f"training image size (default: {DEFAULTS['imgsz']})")
    parser.add_argument("--batch", type=checks.positive, help=f"default: {DEFAULTS['batch_train']} "
                        f"({DEFAULTS['batch_distill']} with --distill)")
    parser.add_argument("--device", type=checks.training_device, help="cpu, 0, 0,1 (several GPUs train with DDP)")
    parser.add_argument("--resume", metavar="LAST.pt", type=checks.existing_file,
                        help="resume an interrupted run from its last.pt (with --distill: its NAME.last.pt state)")
    _run_folder_arguments(parser, DEFAULTS["project_train"])
    parser.add_argument("--pretrained", metavar="WEIGHTS", type=checks.existing_file,
                        help="start from a spikedet checkpoint (tensors of the same name and shape; the run says "
                             "which layers were transferred)")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"], help=f"random seed (default: {DEFAULTS['seed']})")
    parser.add_argument("--workers", type=checks.integer(0, what="a non-negative integer"), default=DEFAULTS["workers"],
                        help=f"data loader processes (default: {DEFAULTS['workers']})")
    parser.add_argument("--plots", type=checks.boolean, default=True, help="ultralytics training plots (default: true)")
    parser.add_argument("--pretrained-darknet", metavar="WEIGHTS", type=checks.existing_file,
                        help="start the backbone from darknet weights (e.g. yolov3-tiny.weights into yolov3-tiny)")
    parser.add_argument("--darknet-cfg", metavar="CFG", type=checks.existing_file,
                        help="their cfg (default: the .cfg of the same name beside them)")
    model = parser.add_argument_group("model choices (default: from the model config)")
    model.add_argument("--scale", choices=("n", "s", "m"), help="width: n = 0.25, s = 0.5, m = 1.0")
    model.add_argument("--pool", choices=CHOICES["pool"], help="what the max-pool layers become")
    de = parser.add_argument_group("dual-error activation (default: from the model config)")
    de.add_argument("--levels", type=checks.positive_list, metavar="L",
                    help="L: the time steps the SNN is meant to run (--distill takes several, e.g. 8,16: one is "
                    "drawn per step)")
    de.add_argument("--granularity", choices=CHOICES["granularity"], help="one lambda per layer or per channel")
    de.add_argument("--clip", type=checks.boolean, help="inject the clipping error (true/false)")
    de.add_argument("--quantize", type=checks.boolean, help="inject the quantization error (true/false)")
    de.add_argument("--reset", choices=CHOICES["reset"], help="the neuron trained for: reset by subtraction from "
                    "half a threshold (default), or to zero from 0 (NIR's IF neuron; convert with --spikes binary "
                    "--reset zero --v-init 0)")
    de.add_argument("--relu", action="store_true", help="plain ReLU baseline: --clip false --quantize false")
    kd = parser.add_argument_group("distillation of a darknet network (--distill; labels not needed)")
    kd.add_argument("--distill", action="store_true",
                    help="fine-tune darknet --weights/--cfg into its dual-error copy, taught by the float network")
    kd.add_argument("--weights", type=checks.existing_file, help="the darknet .weights (the teacher)")
    kd.add_argument("--cfg", type=checks.existing_file, help="its .cfg")
    kd.add_argument("--names", type=checks.existing_file, help="its .names (default: beside the cfg)")
    kd.add_argument("--images", type=checks.existing_path, nargs="+", metavar="SOURCE",
                    help="training images: one or more folders, dataset YAMLs (train split) or .txt image lists")
    kd.add_argument("--output", type=checks.output_file, help="the checkpoint to write")
    kd.add_argument("--lambda-only", action="store_true",
                    help="learn only the thresholds lambda (weights frozen): the calibration baseline")
    kd.add_argument("--init", choices=CHOICES["distill_init"], default=CHOICES["distill_init"][0],
                    help="where lambda starts: least squared error at the levels (mse) or p99.99 (percentile)")
    kd.add_argument("--start", type=checks.existing_file, metavar="CHECKPOINT",
                    help="start the student from this distilled checkpoint of the same teacher (its weights and "
                    "thresholds; a new schedule of steps=N): a longer run without redoing the first")
    kd.add_argument("--augment", choices=CHOICES["distill_augment"], default=CHOICES["distill_augment"][0],
                    help="training views: crops (default), or crops plus mosaics of four and blends of two "
                    "(mosaic_mixup)")


@command("train", help="train a dual-error Tiny-YOLO with ultralytics' trainer")(_add_train_arguments)
def _run_train(args, parser):
    if args.distill:
        return _run_distill(args, parser)
    from ..train import train

    if not args.data and not args.resume:
        parser.error("the following arguments are required: --data (or --resume)")
    if args.levels and len(args.levels) > 1:
        parser.error("--levels takes one value when training (several only with --distill)")
    args.levels = args.levels[0] if args.levels else None
    dual_error = {k: getattr(args, k) for k in ("levels", "granularity", "clip", "quantize", "reset")
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
    from ..distill import check_options, distill, resume

    overrides = dict(args.overrides)
    if args.device:  # --device 0 is CUDA device 0, as for training
        overrides.setdefault("device", f"cuda:{args.device}" if args.device.isdigit() else args.device)
    options = check_options(overrides)
    if args.resume:
        given = [f"--{k}" for k in ("weights", "cfg", "images", "output", "data", "pretrained", "start")
                 if getattr(args, k)]
        if given:
            parser.error(f"--distill --resume continues the run as it was started: {', '.join(given)} not taken")
        result = resume(args.resume, **{k: v for k, v in options.items() if v is not None})
    else:
        missing = [f"--{k}" for k in ("weights", "cfg", "images", "output") if not getattr(args, k)]
        if missing:
            parser.error(f"--distill needs {', '.join(missing)}")
        if args.data or args.pretrained:
            parser.error("--distill takes its images from --images (no --data or --pretrained)")
        result = distill(args.weights, args.cfg, args.images, args.output,
                         levels=args.levels or DEFAULTS["levels_distill"], init=args.init, augment=args.augment,
                         epochs=args.epochs or DEFAULTS["epochs_distill"], imgsz=args.imgsz,
                         batch=args.batch or DEFAULTS["batch_distill"], lambda_only=args.lambda_only,
                         seed=args.seed, names=args.names, start=args.start, **options)
    if result.name.endswith(".last.pt"):
        print(f"distillation state (not finished): {result}")
    else:
        print(f"distilled weights: {result}")


# --- distill-loss -------------------------------------------------------------------------------------------


def _add_distill_loss_arguments(parser):
    parser.add_argument("--weights", required=True, type=checks.existing_file,
                        help="a distilled spikedet checkpoint (the student)")
    parser.add_argument("--teacher", required=True, type=checks.existing_file, help="the darknet .weights it was "
                        "distilled from")
    parser.add_argument("--cfg", required=True, type=checks.existing_file, help="their .cfg")
    parser.add_argument("--names", type=checks.existing_file, help="the .names (default: beside the cfg)")
    images = parser.add_mutually_exclusive_group(required=True)
    images.add_argument("--selection-of", metavar="CHECKPOINT", type=checks.existing_file,
                        help="score on the selection images named in this distilled checkpoint (or a run's "
                        "NAME.last.pt state)")
    images.add_argument("--images", type=checks.existing_path, nargs="+", metavar="SOURCE",
                        help="score on these images: folders, dataset YAMLs (train split) or .txt image lists")
    parser.add_argument("--levels", type=checks.positive_list, default=list(DEFAULTS["levels_distill"]),
                        metavar="L", help="levels to score at, besides the float network (default: 8,16)")
    parser.add_argument("--imgsz", type=checks.image_size, default=DEFAULTS["imgsz"],
                        help=f"image side (default: {DEFAULTS['imgsz']})")
    parser.add_argument("--teacher-ap", action="store_true",
                        help="also score each level's detections against the teacher's detections scoring >= "
                        f"{DEFAULTS['teacher_ap_conf']} (AP50 and AP by pycocotools; spikedet.distill.teacher_ap)")
    parser.add_argument("--per-layer", action="store_true",
                        help="also the loss at each level with one layer quantized alone and with every layer "
                        "quantized but that one: where the level loss sits (spikedet.distill.layer_loss)")
    parser.add_argument("--first-copies", type=checks.first_copies, metavar="K",
                        help="score the network as converted with --first-copies K: its first layer run by K neurons "
                        "per channel, K * L levels (default: as the file records; spikedet.snn.population)")
    parser.add_argument("--negative-events", choices=CHOICES["negative_events"],
                        help="score the network as converted with --negative-events: leaky neurons' negative events "
                        "worth a positive one (whole) or the slope alpha of one (fine) (default: as the file records)")
    parser.add_argument("--threshold-scales", type=checks.threshold_scale, nargs="+", metavar="S",
                        help="also the loss at each level with every threshold times S, and the S of least loss: "
                        "the --threshold-scale to convert with for T = L (spikedet.distill.threshold_scale)")
    parser.add_argument("--json", type=checks.output_file, help="also write the figures to this file")


@command("distill-loss", help="a distilled network's head loss against its teacher on held-out images (the "
         "selection measure)")(_add_distill_loss_arguments)
def _run_distill_loss(args, parser):
    from ..darknet import load_darknet
    from ..distill import selection_loss, training_images
    from ..distill.images import selection_images_of
    from ..fileio import atomic_write_json
    from ..model.activation import mark_fine_negative, mark_first_copies
    from ..model.checkpoint import load_ann

    paths = selection_images_of(args.selection_of) if args.selection_of else training_images(args.images)
    student = load_ann(args.weights).float().eval()
    if args.first_copies:
        mark_first_copies(student, args.first_copies)
    if args.negative_events:
        mark_fine_negative(student, args.negative_events == "fine")
    teacher = load_darknet(args.cfg, args.teacher, args.names).float().eval()
    print(f"head loss of {args.weights} against {args.teacher} on {len(paths)} images, {args.imgsz} px ...",
          file=sys.stderr, flush=True)
    levels = sorted(set(args.levels))
    result = selection_loss(student, teacher, paths, args.imgsz, levels)
    mean = sum(result[str(L)] for L in levels) / len(levels)
    print("  ".join(f"L={k}: {v:.4f}" if k != "float" else f"float: {v:.4f}" for k, v in result.items())
          + f"  mean over levels: {mean:.4f}")
    scored = None
    if args.teacher_ap:
        from ..distill.teacher_ap import teacher_ap

        scored = teacher_ap(student, teacher, paths, args.imgsz, levels)
        print("AP against the teacher's detections (AP50 / AP): " + "  ".join(
            f"{'L=' + k if k != 'float' else k}: {_figure(v['AP50'])} / {_figure(v['AP'])}"
            for k, v in scored.items()))
    per_layer = None
    if args.per_layer:
        from ..distill.layer_loss import layer_losses

        per_layer = layer_losses(student, teacher, paths, args.imgsz, levels)
        _print_layer_losses(per_layer)
    scaled = None
    if args.threshold_scales:
        from ..distill.threshold_scale import least_loss_scale, threshold_scale_losses

        scaled = threshold_scale_losses(student, teacher, paths, args.imgsz, levels,
                                        list(dict.fromkeys(args.threshold_scales)))
        for level, rows in scaled.items():
            print(f"L={level}, every threshold times S: " + "  ".join(f"{r['scale']:g}: {r['loss']:.4f}" for r in rows)
                  + f"  least loss at S = {least_loss_scale(rows):g}")
    if args.json:
        atomic_write_json(args.json, {"weights": str(args.weights), "first_copies": args.first_copies,
                                      "negative_events": args.negative_events, "images": [str(p) for p in paths],
                                      "imgsz": args.imgsz, "loss": result, "mean_over_levels": mean,
                                      **({"teacher_ap": scored} if scored else {}),
                                      **({"per_layer": per_layer} if per_layer else {}),
                                      **({"threshold_scales": scaled} if scaled else {})})


def _print_layer_losses(per_layer: dict) -> None:
    """One row per dual-error layer: its loss quantized alone and with every other layer quantized."""
    levels = list(per_layer["levels"])
    print(f"per layer (float network: {per_layer['float']:.4f}; "
          + ", ".join(f"every layer at L={L}: {per_layer['levels'][L]['all']:.4f}" for L in levels) + ")")
    print("layer".ljust(24) + "channels" + "".join(f"  L={L} alone  L={L} all but it" for L in levels))
    for i, layer in enumerate(per_layer["layers"]):
        cells = "".join(f"  {per_layer['levels'][L]['alone'][i]:>9.4f}  {per_layer['levels'][L]['all_but'][i]:>15.4f}"
                        for L in levels)
        print(f"{layer['name']:<24}{layer['channels']:>8}{cells}")


def _figure(value) -> str:
    return "-" if value is None else f"{value:.4f}"


# --- choose -------------------------------------------------------------------------------------------------


def _add_choose_arguments(parser):
    parser.add_argument("--shipped", required=True, type=checks.existing_file,
                        help="the distilled file shipped now (its selection images are the ones scored, unless "
                             "--gt-coco)")
    parser.add_argument("--candidates", required=True, nargs="+", type=checks.existing_file, metavar="FILE",
                        help="distilled files that may replace it (outputs and kept NAME.stepN.pt files)")
    parser.add_argument("--teacher", required=True, type=checks.existing_file,
                        help="the darknet .weights they were distilled from")
    parser.add_argument("--cfg", required=True, type=checks.existing_file, help="its .cfg")
    parser.add_argument("--names", type=checks.existing_file, help="the .names (default: beside the cfg)")
    parser.add_argument("--levels", type=checks.positive_list, default=list(DEFAULTS["levels_distill"]),
                        metavar="L", help="levels whose teacher AP50 makes the figure (default: 8,16)")
    parser.add_argument("--imgsz", type=checks.image_size, default=DEFAULTS["imgsz"],
                        help=f"image side (default: {DEFAULTS['imgsz']})")
    parser.add_argument("--resamples", type=checks.integer(0, 100000), default=0, metavar="N",
                        help="also give each candidate's figure and float AP50 minus the shipped file's with a 95%% "
                             "interval from N paired draws of the selection images (informative; the rule "
                             "compares the whole set's figures; default 0: none)")
    parser.add_argument("--gt-coco", metavar="INSTANCES.json", type=checks.existing_file,
                        help="score by COCO AP50 against these labels instead of teacher AP: each file's burst SNN "
                             "at T = each level and its float network, on the candidates' own selection images "
                             "(labelled held-out training images such as COCO train; the rule of 2026-12-07)")
    parser.add_argument("--json", type=checks.output_file, help="also write the figures and the verdict here")


@command("choose", help="apply the selection rule: score the shipped distilled file and candidates on held-out "
         "selection images (teacher AP, or COCO AP50 with --gt-coco) and say which one ships")(_add_choose_arguments)
def _run_choose(args, parser):
    from ..distill import sha256
    from ..distill.choose import MARGIN, check_same_selection, choose, figure_intervals, labelled_scores, run_record
    from ..distill.choose import scored, trained_on
    from ..distill.images import selection_images_of
    from ..fileio import atomic_write_json, load_torch_file

    if args.gt_coco and args.resamples:
        parser.error("--resamples goes with teacher AP; with --gt-coco, eval --save-detections and compare give "
                     "the intervals")
    files = [args.shipped] + [c for c in args.candidates if c != args.shipped]
    contents = {f: load_torch_file(f) for f in files}
    records = {f: run_record(f, contents[f]) for f in files}
    teacher_sha = sha256(args.teacher)
    for f in files:
        if records[f]["teacher"].get("weights_sha256") != teacher_sha:
            raise SpikedetError(f"{f}: was not distilled from {args.teacher} (weights sha256 differs)")
    held_by = files[1] if args.gt_coco and len(files) > 1 else args.shipped  # whose selection images are scored
    for f in files[1:]:
        check_same_selection(f, records[f], held_by, records[held_by])
    paths = selection_images_of(held_by)
    levels = sorted(set(args.levels))
    truth = found = None
    if args.gt_coco:
        seen = len(trained_on(records[args.shipped], paths))
        if seen:
            print(f"note: {args.shipped} trained (without labels) on {seen} of the {len(paths)} images scored, "
                  "which can only favour it", file=sys.stderr)
        results = {}
        for f in files:
            print(f"COCO AP50 of {f} on {len(paths)} labelled selection images ...", file=sys.stderr, flush=True)
            results[f] = labelled_scores(f, args.gt_coco, paths, levels, args.imgsz)
    else:
        truth, found, results = _teacher_scores(args, files, contents, paths, levels)
    figures = {f: scored(str(f), records[f]["steps"], results[f]) for f in files}
    winner, why = choose(figures[args.shipped], [figures[f] for f in files[1:]])
    print("file  steps  " + "  ".join(f"AP50 {'T' if args.gt_coco else 'L'}={L}" for L in levels) + "  figure  float")
    for f in files:
        s = figures[f]
        print(f"{f}{' (shipped)' if f == args.shipped else ''}  {s.steps}  "
              + "  ".join(f"{s.levels[str(L)]:.4f}" for L in levels) + f"  {s.figure:.4f}  {s.float_ap50:.4f}")
    print(f"rule: {winner.name} replaces {args.shipped}" if winner else f"rule: {args.shipped} stays")
    for line in why:
        print(f"  {line}")
    intervals = {}
    if args.resamples and len(files) > 1:
        intervals = figure_intervals(truth, found, args.shipped, args.resamples)
        print(f"minus the shipped file's, 95% intervals from {args.resamples} paired draws of the "
              f"{len(paths)} selection images (informative; the rule compares the whole set's figures):")
        for f, d in intervals.items():
            print(f"  {f}: figure {d['figure']['value']:+.4f} [{d['figure']['low']:+.4f}, {d['figure']['high']:+.4f}]"
                  f"  float {d['float']['value']:+.4f} [{d['float']['low']:+.4f}, {d['float']['high']:+.4f}]")
    if args.json:
        measure = "coco_ap" if args.gt_coco else "teacher_ap"
        atomic_write_json(args.json, {
            "images": [str(p) for p in paths], "imgsz": args.imgsz, "levels": levels, "margin": MARGIN,
            "measure": measure, **({"gt_coco": str(Path(args.gt_coco).resolve())} if args.gt_coco else {}),
            "shipped": str(args.shipped), "winner": winner.name if winner else None, "why": why,
            "files": [{"file": str(f), "sha256": sha256(f), "steps": figures[f].steps, measure: results[f],
                       "figure": figures[f].figure, **({"minus_shipped": intervals[f]} if f in intervals else {})}
                      for f in files], **({"resamples": args.resamples} if intervals else {})})


def _teacher_scores(args, files, contents, paths, levels):
    """(the teacher's boxes as a ground truth, each file's detections, each file's teacher AP per level)."""
    from ..darknet import load_darknet
    from ..distill.teacher_ap import ap_against, student_detections, teacher_truth
    from ..model.checkpoint import load_ann
    from ..networks import default_eval_iou

    teacher = load_darknet(args.cfg, args.teacher, args.names).float().eval()
    truth = teacher_truth(teacher, paths, args.imgsz)  # the stand-in labels: one set for every file
    found, results = {}, {}
    for f in files:
        print(f"teacher AP of {f} on {len(paths)} selection images, {args.imgsz} px ...", file=sys.stderr, flush=True)
        student = load_ann(f, contents[f]).float().eval()
        found[f] = student_detections(student, paths, args.imgsz, levels, default_eval_iou(teacher))
        results[f] = ap_against(truth, found[f])
    return truth, found, results


# --- average ------------------------------------------------------------------------------------------------


def _add_average_arguments(parser):
    parser.add_argument("files", nargs="+", type=checks.existing_file, metavar="FILE",
                        help="distilled files that started from one file (start=) and hold out the same images")
    parser.add_argument("--output", required=True, type=checks.output_file, help="the averaged network (.pt)")


@command("average", help="the mean of several distilled networks' weights (a model soup), a candidate for "
         "`choose`")(_add_average_arguments)
def _run_average(args, parser):
    from ..distill import sha256
    from ..distill.average import average_checkpoints
    from ..fileio import atomic_torch_save, load_torch_file
    from ..model.checkpoint import load_ann

    if len({str(Path(f).resolve()) for f in args.files}) != len(args.files):
        parser.error("a file is named twice (it would weigh double in the mean)")
    contents = [load_torch_file(f) for f in args.files]
    for f, content in zip(args.files, contents):
        load_ann(f, content)  # the full checks any network file gets
    averaged = average_checkpoints(args.files, contents, [sha256(f) for f in args.files])
    atomic_torch_save(averaged, args.output, replace=False)
    print(f"averaged {len(args.files)} networks ({averaged['distill']['steps']} steps in all): {args.output}")


# --- fix-anchors --------------------------------------------------------------------------------------------


def _add_fix_anchors_arguments(parser):
    parser.add_argument("--weights", required=True, type=checks.existing_file,
                        help="a network distilled from darknet weights whose [yolo] anchors spikedet knows, with a "
                             "cfg that decodes them otherwise (spikedet.darknet.known)")
    parser.add_argument("--output", required=True, type=checks.output_file, help="the mended network (.pt)")


@command("fix-anchors", help="decode a network distilled from known darknet weights with the [yolo] anchors those "
         "weights were trained with (the same tensors, its cfg's masks mended)")(_add_fix_anchors_arguments)
def _run_fix_anchors(args, parser):
    from ..darknet.known import KNOWN, teacher_sha256, with_known_anchors
    from ..distill import sha256
    from ..errors import fail
    from ..fileio import atomic_torch_save, load_torch_file
    from ..model.checkpoint import is_ann_file, load_ann

    content = load_torch_file(args.weights)
    config = content.get("config") if is_ann_file(content) and content.get("family") == "darknet" else None
    if not isinstance(config, dict) or not isinstance(config.get("cfg_text"), str):
        raise fail(args.weights, "is not a network distilled from darknet weights")
    teacher = teacher_sha256(content)
    if teacher not in KNOWN:
        raise fail(args.weights, "was not distilled from darknet weights whose anchors spikedet knows: nothing to mend")
    text = with_known_anchors(config["cfg_text"], teacher)
    if text == config["cfg_text"]:
        raise fail(args.weights, f"already decodes {KNOWN[teacher].name} with its anchors: nothing to mend")
    mended = {**content, "config": {**config, "cfg_text": text},
              "anchors_mended": {"from_file_sha256": sha256(args.weights),
                                 "masks": [list(m) for m in KNOWN[teacher].masks]}}
    load_ann(args.weights, mended)  # the checks every network file gets, its anchors included
    atomic_torch_save(mended, args.output, replace=False)
    print(f"{args.output}: {args.weights} decoded with the [yolo] masks "
          + " and ".join(",".join(map(str, m)) for m in KNOWN[teacher].masks) + f" {KNOWN[teacher].name} was trained "
          "with; every tensor as it was")
