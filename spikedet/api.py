"""The Python API in ultralytics' shape: one object for a network at any stage of the pipeline.

    from spikedet import SpikingYOLO
    model = SpikingYOLO("yolov3-tiny", scale="n")              # a config: a new dual-error ANN
    model.train(data="data/shapes/yolo/shapes.yaml", epochs=50, imgsz=192)
    snn = model.convert(output="net.snn.pt", imgsz=192)          # calibration images when lambda is not learned
    snn.val(gt_coco="instances_test.json", timesteps=[8, 16, 32])
    snn.predict("photo.jpg", timesteps=16)

A network file (an SNN, a spikedet checkpoint) or darknet `.weights` with `cfg=` load the same way. The CLI
(spikedet/cli.py) is a thin layer over these methods; every default lives in spikedet/defaults.py.
"""
from dataclasses import asdict
from pathlib import Path
from typing import Optional, Sequence, Union

from .data.records import VOC_CLASSES, load_class_names
from .defaults import DEFAULTS
from .detect import detect, detections_in, make_result
from .checks import OPTION_CHECKS, check_paths, check_timesteps, check_values, output_problem
from .errors import SpikedetError, fail
from .fileio import atomic_write_json
from .inference import StreamSettings, calibration_images
from .interrupts import STOPS, interrupted
from .model.checkpoint import load_ann, save_ann
from .model.yolo import DualErrorYOLO
from .networks import (class_names, default_imgsz, default_resize, default_timesteps, is_snn,
                       load_network)
from .provenance import describe, network_record, versions
from .snn.convert import convert, reference_ann
from .snn.files import save_snn
from .sources import resolve
from .validate import GroundTruth, evaluate_networks
from .eval.report import format_report

PathLike = Union[str, Path]


def is_network_file(model: PathLike) -> bool:
    """A network file (opened by content) rather than a model config: a known suffix in any case (.PT, .pth),
    or an existing file that is not YAML."""
    suffix = Path(model).suffix.lower()
    return suffix in (".pt", ".pth", ".weights") or (Path(model).is_file() and suffix not in (".yaml", ".yml"))


def check_output(output: Optional[PathLike], overwrite: bool):
    """An output path checked before any work: writable, and new unless overwrite."""
    if output is None:
        return
    problem = output_problem(Path(output))
    if problem is None and Path(output).exists() and not overwrite:
        problem = "already exists: give another name, or overwrite=True"
    if problem:
        raise fail(output, problem)


def detection_files(folder: Optional[PathLike], timesteps: Sequence[int]) -> dict:
    """Where val's save_detections writes: {None: FOLDER/ann.json, T: FOLDER/tT.json for each T}, every one
    checked to be new and writable before any work ({} when not asked)."""
    if folder is None:
        return {}
    files = {None: Path(folder) / "ann.json", **{t: Path(folder) / f"t{t}.json" for t in timesteps}}
    for path in files.values():
        check_output(path, overwrite=False)
    return files


class SpikingYOLO:
    """A Tiny-YOLO at any stage: a config to train, a trained ANN to convert, an SNN to score and run."""

    def __init__(self, model: PathLike = DEFAULTS["model"], cfg: Optional[PathLike] = None,
                 names: Optional[PathLike] = None, **config_overrides):
        """model: a config name or YAML (configs/; overrides: scale, pool, dual_error), a spikedet file (ANN
        checkpoint or SNN), or darknet .weights with cfg= (and names=)."""
        check_paths(True, model=model)
        check_paths(cfg=cfg, names=names)
        self.ann = None  # an SNN's source ANN
        self.config = None  # a config not trained yet: (name or path, overrides)
        if cfg is not None or is_network_file(model):
            self.network, self.ann = load_network(model, cfg, names)
        else:
            self.config = (model, config_overrides)
            self.network = DualErrorYOLO(model, **config_overrides)
        self.source = str(model)

    def __repr__(self):
        kind = "SNN" if self.is_snn else "ANN"
        return f"SpikingYOLO({self.source!r}, {kind}, {len(self.names)} classes)"

    @property
    def is_snn(self) -> bool:
        return is_snn(self.network)

    @property
    def names(self):
        return class_names(self.network)

    def train(self, data: PathLike, **train_args) -> "SpikingYOLO":
        """Train with ultralytics' trainer (arguments: spikedet.train.train); the trained weights replace
        this network's. Returns self."""
        from .train import train  # on use: it loads ultralytics' whole training stack

        if self.config is None:
            raise fail(self.source, "train starts from a model config (pretrained weights: pretrained=...)")
        name, overrides = self.config
        best = train(data, model=name, **{**overrides, **train_args})
        self.network, self.source, self.config = load_ann(best), str(best), None
        return self

    def convert(self, calibration: Optional[PathLike] = None, output: Optional[PathLike] = None,
                imgsz: Optional[int] = None, calibration_count: int = DEFAULTS["calibration_count"],
                overwrite: bool = False, **options) -> "SpikingYOLO":
        """The SNN of this ANN (options: spikedet.snn.convert), saved to `output` when given (an existing file
        only with overwrite=True). imgsz: default the size the ANN was trained at, else 416.

        calibration: a dataset YAML (its train split) or an image folder, for layers without a learned lambda.
        """
        check_paths(calibration=calibration, output=output)
        check_output(output, overwrite)
        imgsz = default_imgsz(self.network) if imgsz is None else imgsz
        check_values(imgsz=imgsz, calibration_count=calibration_count, percentile=options.get("percentile"),
                     threshold_scale=options.get("threshold_scale"), v_init=options.get("v_init"),
                     first_copies=options.get("first_copies"),
                     timesteps=options.get("timesteps"), allow_long_t=options.pop("allow_long_t", False))
        if self.is_snn:
            raise fail(self.source, "already an SNN")
        resize = default_resize(self.network)
        try:
            images = calibration_images(calibration, imgsz, calibration_count, resize) if calibration else None
            ann = reference_ann(self.network, options.get("leaky") or DEFAULTS["leaky"])
            snn = convert(self.network, images, **options)
        except STOPS as e:
            raise interrupted(e, f"while converting; kept nothing ({output or 'no output'} not written)") from None
        snn.meta.update(source=self.source, imgsz=imgsz, resize=resize)
        if output is not None:
            save_snn(snn, ann, output, replace=overwrite)
        converted = SpikingYOLO.__new__(SpikingYOLO)
        converted.network, converted.ann, converted.config = snn, ann, None
        converted.source = str(output) if output is not None else self.source  # in memory: its ANN's file
        return converted

    def stream_settings(self, timesteps: Optional[Sequence[int]] = None, **given) -> StreamSettings:
        """Settings for the inference stream: the given ones, else the network's and spikedet's defaults."""
        given = {k: v for k, v in given.items() if v is not None}
        allow_long_t = given.pop("allow_long_t", False)
        check_values(allow_long_t, timesteps=timesteps, **{k: v for k, v in given.items() if k in OPTION_CHECKS})
        if self.is_snn:
            given["timesteps"] = list(timesteps or [default_timesteps(self.network)])
            check_timesteps(given["timesteps"], allow_long_t, source=None if timesteps else self.source)
        if given.get("burn_in") and not (self.is_snn and given["burn_in"] < min(given["timesteps"])):
            raise SpikedetError(f"burn_in {given['burn_in']}: the steps an SNN's read-out leaves out must be fewer "
                                f"than every T ({'T = ' + str(given.get('timesteps')) if self.is_snn else 'an ANN'})")
        given.setdefault("imgsz", default_imgsz(self.network))
        given.setdefault("batch", DEFAULTS["batch_cpu" if str(given.get("device", "cpu")) == "cpu"
                                           else "batch_gpu"])
        return StreamSettings(**given)

    def val(self, gt_coco: Optional[PathLike] = None, gt_voc: Optional[PathLike] = None,
            split: str = DEFAULTS["voc_split"], data: Optional[PathLike] = None, images: Optional[PathLike] = None,
            timesteps: Optional[Sequence[int]] = None, max_images: Optional[int] = None,
            progress: bool = True, allow_partial: bool = False, reference: Optional[PathLike] = None,
            reference_cfg: Optional[PathLike] = None, calibration: Optional[PathLike] = None,
            verbose: bool = True, save_detections: Optional[PathLike] = None,
            only_images: Optional[Sequence[PathLike]] = None, **stream) -> dict:
        """mAP against COCO or VOC ground truth, printed as `spikedet eval` prints it (verbose) and returned.

        An SNN is scored at every T of `timesteps` (default: DEFAULTS["timesteps_eval"]) from one simulation,
        against a reference row: its source ANN, or `reference` (e.g. darknet's float .weights, with
        reference_cfg). An ANN given timesteps is converted in memory first (burst neurons; its learned
        thresholds, else `calibration` images). data: a dataset YAML naming VOC classes. allow_partial: score
        even when some of the network's classes are not in the ground truth. The result names what was scored
        ("reference", "run": files with sha256, images, settings, versions). save_detections: a folder to write
        the scored detections into (ann.json for the ANN row, tT.json for the SNN at T; the file format
        `--detections` takes), e.g. for tools/compare_ap.py's intervals; none of those files may exist yet.
        only_images: score only these images of the ground truth (e.g. a distilled run's held-out selection
        images, spikedet.distill.images.selection_images_of, when they are labelled)."""
        check_paths(gt_coco=gt_coco, gt_voc=gt_voc, data=data, images=images, reference=reference,
                    reference_cfg=reference_cfg, calibration=calibration, save_detections=save_detections)
        check_values(max_images=max_images)
        if timesteps and not self.is_snn:
            snn = self._as_snn(calibration, stream.get("imgsz"))
            return snn.val(gt_coco, gt_voc, split, data, images, timesteps, max_images, progress, allow_partial,
                           reference, reference_cfg, None, verbose, save_detections, only_images, **stream)
        voc_names = load_class_names(data) if data else VOC_CLASSES
        truth = GroundTruth.read(gt_coco, gt_voc, split, images, voc_names, max_images, only_images)
        truth.check_classes(self.names, allow_partial)
        if reference is not None:
            base, record = load_network(reference, reference_cfg)[0], network_record
            base_record = record(base, reference, "reference")
        else:
            base = self.ann if self.is_snn else None
            base_record = network_record(self.ann if self.is_snn else self.network, self.source, "source")
        settings = self.stream_settings(timesteps or DEFAULTS["timesteps_eval"], **stream)
        files = detection_files(save_detections, settings.timesteps if self.is_snn else [])
        results = evaluate_networks([n for n in (base, self.network) if n is not None], truth, settings, progress,
                                    keep_detections=save_detections is not None)
        if results is None:  # a torchrun process other than rank 0: rank 0 reports
            return None
        if files:
            found = results.pop("detections")
            for key, path in files.items():
                atomic_write_json(path, found["ann"] if key is None else found["snn"][key], indent=None,
                                  replace=False)
        results["reference"] = base_record
        results["run"] = {"weights": network_record(self.network, self.source, "scored"),
                          "ground_truth": truth.source, "split": None if gt_coco else split,
                          "images": len(truth.records), "settings": asdict(settings), "versions": versions()}
        if verbose:
            print(format_report(results))
        return results

    def predict(self, source, timesteps: Optional[int] = None, save: bool = False,
                project: PathLike = DEFAULTS["project_detect"], name: str = DEFAULTS["name"],
                save_txt: bool = False, save_rates: bool = False, progress: bool = True,
                calibration: Optional[PathLike] = None, gt_coco: Optional[PathLike] = None, **stream):
        """Detections, as ultralytics' predict gives them: a list of Results (one per image or video frame:
        boxes.xyxy / .conf / .cls, names, plot(); spikedet adds .key, .detections and .timesteps).

        source: an image, video or folder path, a glob, a numpy array (BGR, as OpenCV reads), a PIL image, or a
        list of these. save=True writes a new run folder instead (see spikedet.detect; detections.json with the
        ids of `gt_coco` when given) and returns its DetectSummary. An ANN given timesteps is converted in
        memory first (burst neurons; its learned thresholds, else `calibration` images)."""
        check_paths(project=project, calibration=calibration, gt_coco=gt_coco)
        check_values(stream.get("allow_long_t", False), timesteps=timesteps, chunk=stream.get("chunk"))
        stream.setdefault("conf", DEFAULTS["conf_detect"])
        stream.setdefault("iou", DEFAULTS["iou_detect"])
        # the options are checked before the source is read (an ANN given timesteps is checked once converted)
        self.stream_settings([timesteps] if timesteps is not None and self.is_snn else None, **stream)
        items = resolve(source)  # a bad source fails before any work
        if timesteps is not None and not self.is_snn:
            snn = self._as_snn(calibration, stream.get("imgsz"))
            return snn.predict(source, timesteps, save, project, name, save_txt, save_rates,
                               progress, None, gt_coco, **stream)
        if save_rates and not self.is_snn:
            raise fail(self.source, "firing rates need an SNN (give timesteps to run this ANN as one)")
        settings = self.stream_settings(None if timesteps is None else [timesteps], **stream)
        if save:
            summary = detect(self.network, source, settings, project, name, save_txt, save_rates,
                             progress, gt_coco)
            summary.ran = self.ran(settings, summary.rates)
            return summary
        t = max(settings.timesteps) if settings.timesteps else None
        return [make_result(image, key, self.names, dets, t)
                for key, image, dets in detections_in(self.network, items, settings, skipped=[])]

    def ran(self, settings: StreamSettings, rates: Sequence[dict] = ()) -> str:
        """One line saying what ran: the network, T, method, and with spike statistics SOPs and energy."""
        text = describe(self.network)
        if self.is_snn:
            method = settings.method or self.network.default_method()
            text += f", run at T = {max(settings.timesteps)} by {method}"
            if rates:
                sops = sum(r["snn_sops"] for r in rates) / len(rates)
                snn = sum(r["energy_pj"]["snn"] for r in rates) / len(rates) / 1e9
                ann = sum(r["energy_pj"]["ann"] for r in rates) / len(rates) / 1e9
                text += f"; per image {sops:.3g} SOPs, energy {snn:.3g} mJ (ANN: {ann:.3g} mJ)"
            else:
                text += "; SOPs and energy: add --save-rates (save_rates=True)"
        return text

    def _as_snn(self, calibration: Optional[PathLike], imgsz: Optional[int]) -> "SpikingYOLO":
        """This ANN converted in memory, or a one-line error saying how to convert a network whose thresholds
        are not learned."""
        try:
            return self.convert(calibration, imgsz=imgsz)
        except SpikedetError as e:
            if calibration is not None or "no clip threshold" not in str(e):
                raise
        raise fail(self.source, "has no learned thresholds to run as an SNN: give calibration images "
                                "(--calibration DIR|DATA.yaml, calibration=...), or convert it once with `spikedet "
                                "convert --calibration DIR --scales mse --timesteps T --output net.snn.pt` and run "
                                "that file")

    def save(self, path: PathLike, overwrite: bool = False) -> Path:
        """Write this network as a spikedet file (an SNN with its source ANN, or an ANN checkpoint); an existing
        file only with overwrite=True."""
        check_paths(True, path=path)
        check_output(path, overwrite)
        if self.is_snn:
            return save_snn(self.network, self.ann, path, replace=overwrite)
        return save_ann(self.network, path, replace=overwrite)

    def export(self, format: str = "nir", output: Optional[PathLike] = None,
               allow_approximations: bool = False) -> dict:
        """This SNN for a neuromorphic toolchain: a NIR graph at `output` and its metadata beside it
        (spikedet.export); what NIR cannot express is refused in one line. Returns the metadata."""
        from .export import export_nir  # on use: it needs the optional nir package

        if format != "nir":
            raise fail(self.source, f"export format must be 'nir', got {format!r}")
        if not self.is_snn:
            raise fail(self.source, "export takes an SNN: convert the network first")
        if output is None:
            raise fail(self.source, "export needs an output path")
        return export_nir(self.network, output, allow_approximations)
