"""ANN training: ultralytics' detection trainer, running our dual-error Tiny-YOLO.

`train(...)` resolves the model config with its overrides into one YAML file (the exact network trained,
kept beside the runs and recorded in every checkpoint), then hands it to a DetectionTrainer subclass that
(1) builds DualErrorYOLO instead of ultralytics' DetectionModel, (2) sets every lambda from activation
percentiles on the first training batches before the first step, and (3) writes checkpoints atomically.
"""
import contextlib
import hashlib
import io
from datetime import datetime
from pathlib import Path
from typing import Optional, Union

import torch
import yaml
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.cfg import get_cfg
from ultralytics.utils import LOGGER, RANK
from ultralytics.utils.torch_utils import ModelEMA, unwrap_model

from .darknet import transfer_weights
from .data.records import class_names_of
from .defaults import DEFAULTS
from .errors import SpikedetError, fail
from .fileio import atomic_torch_save, atomic_write_bytes, atomic_write_text, load_torch_file, read_yaml
from .model.activation import calibrate_thresholds
from .model.checkpoint import ANN_FORMAT, ANN_VERSION, ann_record, build_ann, load_ann
from .model.yolo import DualErrorYOLO, load_model_config
from .offline import guard_ultralytics_downloads
from .runs import next_run_folder
from .transfer import transfer_report

guard_ultralytics_downloads()

CALIBRATION_BATCHES = 8


def train(data: Optional[Union[str, Path]], model: Union[str, Path] = DEFAULTS["model"],
          epochs: int = DEFAULTS["epochs"], imgsz: int = DEFAULTS["imgsz"], batch: int = DEFAULTS["batch_train"],
          device: Optional[str] = None, resume: Union[bool, str] = False,
          project: Union[str, Path] = DEFAULTS["project_train"], name: str = DEFAULTS["name"],
          scale: Optional[str] = None,
          pool: Optional[str] = None, dual_error: Optional[dict] = None,
          pretrained: Optional[Union[str, Path]] = None, pretrained_darknet: Optional[Union[str, Path]] = None,
          darknet_cfg: Optional[Union[str, Path]] = None, **ultralytics_args) -> Path:
    """Train a dual-error Tiny-YOLO on an ultralytics dataset YAML; return the path of best.pt.

    model: a config name or YAML path (configs/), or, with resume, the last.pt to resume.
    dual_error: overrides of the activation settings, e.g. {"levels": 32, "clip": False}.
    pretrained_darknet: a darknet .weights file whose backbone starts the model (darknet.transfer_weights),
        with its cfg (default: the .cfg of the same name beside it); recorded in the model config as
        `pretrained_darknet`, which is where the trainer reads it.
    ultralytics_args: any other ultralytics train argument (lr0, workers, seed, ...).
    """
    if data is not None:
        check_dataset_yaml(data)
    elif not resume:
        raise SpikedetError("training needs a dataset YAML (data=...)")
    args = {"exist_ok": False, **ultralytics_args, "data": str(data) if data else None, "epochs": epochs,
            "imgsz": imgsz, "batch": batch, "project": str(Path(project).resolve()), "name": name}
    if device is not None:
        args["device"] = device
    check_ultralytics_args(args)
    if resume:
        last = Path(resume if isinstance(resume, (str, Path)) else model)
        _training_state(last)  # a one-line error for anything but a spikedet last.pt with its training state
        args.update(model=str(last), resume=str(last))
    else:
        if pretrained:
            load_ann(pretrained)  # spikedet files only, checked before anything is written: nothing pickled runs
        config = load_model_config(model, scale=scale, pool=pool, dual_error=dual_error)
        if pretrained_darknet:
            if pretrained:
                raise SpikedetError("give pretrained weights or pretrained darknet weights, not both")
            config["pretrained_darknet"] = _darknet_source(pretrained_darknet, darknet_cfg)
        args["model"] = str(_write_resolved_config(config, Path(project)))
        if pretrained:
            args["pretrained"] = str(pretrained)
        if not args["exist_ok"]:  # exp, exp2, ... as detect names its runs, created here so no run shares one
            args.update(name=next_run_folder(project, name).name, exist_ok=True)
    try:
        trainer = SpikingTrainer(overrides=args)
    except (SyntaxError, TypeError, ValueError, FileNotFoundError) as e:  # ultralytics' own checks of arguments
        with contextlib.suppress(OSError):  # the run folder made above, if still empty
            (Path(project) / args["name"]).rmdir()
        raise SpikedetError(f"ultralytics: {' '.join(str(e).split())}") from None
    trainer.train()
    return Path(trainer.best if Path(trainer.best).exists() else trainer.last)


def check_ultralytics_args(args: dict):
    """Arguments passed through to ultralytics checked first: an unknown key or a bad value is one line (the
    closest known key named), where ultralytics prints its whole help and exits 1."""
    import difflib

    from ultralytics.cfg import DEFAULT_CFG_DICT, check_cfg

    for key in args:
        if key not in DEFAULT_CFG_DICT:
            close = difflib.get_close_matches(key, DEFAULT_CFG_DICT, 1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise SpikedetError(f"{key}={args[key]!r}: not an ultralytics train argument{hint}")
    try:
        check_cfg(dict(args))
    except (TypeError, ValueError) as e:
        raise SpikedetError(f"ultralytics: {' '.join(str(e).split())}") from None


def _darknet_source(weights: Union[str, Path], cfg: Optional[Union[str, Path]]) -> dict:
    weights = Path(weights)
    cfg = Path(cfg) if cfg else weights.with_suffix(".cfg")
    for path, problem in ((weights, "darknet weights not found"),
                          (cfg, "darknet cfg not found (give it with --darknet-cfg)")):
        if not path.is_file():
            raise fail(path, problem)
    return {"weights": str(weights.resolve()), "cfg": str(cfg.resolve())}


def _write_resolved_config(config: dict, project: Path) -> Path:
    """The config with all overrides applied, saved under a content hash so runs can share and cite it."""
    text = yaml.safe_dump({k: v for k, v in config.items() if k != "yaml_file"}, sort_keys=False)
    stem = Path(config.get("yaml_file", "model")).stem
    path = project / "configs" / f"{stem}-{hashlib.sha1(text.encode()).hexdigest()[:10]}.yaml"
    if not path.exists():
        atomic_write_text(path, f"# resolved from {config.get('yaml_file', 'a config dict')}\n{text}")
    return path


class SpikingTrainer(DetectionTrainer):
    """DetectionTrainer that builds DualErrorYOLO, calibrates lambda before training, and reads and writes only
    spikedet files (atomically): last.pt / best.pt hold the EMA network's record (see model.checkpoint) and
    the training state as tensors and plain values, so resuming or starting from them runs no pickled code."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.wdir, self.last, self.best = (_AtomicPath(p) for p in (self.wdir, self.last, self.best))
        self.add_callback("on_pretrain_routine_end", _calibrate_before_training)

    def get_model(self, cfg=None, weights=None, verbose=True):
        model = DualErrorYOLO(cfg, nc=self.data["nc"], ch=self.data["channels"], verbose=verbose)
        model = self.set_model_names_for_load(model)
        if weights:
            LOGGER.info(f"spikedet: {self.args.pretrained}: {transfer_report(model, weights)}")
        elif model.yaml.get("pretrained_darknet"):
            source = model.yaml["pretrained_darknet"]
            filled = transfer_weights(source["cfg"], source["weights"], model)
            LOGGER.info(f"spikedet: {filled} conv + batch-norm blocks start from {source['weights']}")
        return model

    def check_resume(self, overrides):
        """Resume from a spikedet last.pt: the run's own arguments, with the few a resume may change."""
        self.resume = bool(self.args.resume)
        if not self.resume:
            return
        last = Path(self.args.resume)
        state = _training_state(last)
        args = {**state["train_args"], **{k: v for k, v in overrides.items() if k in RESUME_MAY_CHANGE}}
        self.args = get_cfg({**args, "model": str(last), "resume": str(last)})

    def setup_model(self):
        """The network to train, and on resume the checkpoint in the form ultralytics' resume_training reads."""
        if isinstance(self.model, torch.nn.Module):
            return None
        if self.resume:
            content = load_torch_file(self.args.resume)
            weights = build_ann(content, self.args.resume)
            self.model = self.get_model(cfg=weights.yaml, weights=weights, verbose=RANK in {-1, 0})
            return {**content["train"], "ema": weights}
        weights = load_ann(self.args.pretrained) if isinstance(self.args.pretrained, (str, Path)) else None
        self.model = self.get_model(cfg=self.model, weights=weights, verbose=RANK in {-1, 0})
        return None

    def save_model(self):
        """last.pt (and best.pt, epochN.pt) as spikedet ANN files with the training state."""
        ema = unwrap_model(self.ema.ema)
        state = {"epoch": self.epoch, "best_fitness": self.best_fitness, "updates": self.ema.updates,
                 "stopper": {"best_fitness": self.stopper.best_fitness, "best_epoch": self.stopper.best_epoch},
                 "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                 "train_args": _plain(vars(self.args)), "train_metrics": _plain({**self.metrics,
                                                                                "fitness": self.fitness}),
                 "date": datetime.now().astimezone().isoformat()}
        content = {"format": ANN_FORMAT, "version": ANN_VERSION, **ann_record(ema, half=True), "train": state}
        buffer = io.BytesIO()
        torch.save(content, buffer)
        data = buffer.getvalue()
        self.wdir.mkdir(parents=True, exist_ok=True)
        self.last.write_bytes(data)
        if self.best_fitness == self.fitness:
            self.best.write_bytes(data)
        if self.save_period > 0 and self.epoch % self.save_period == 0:
            _AtomicPath(self.wdir / f"epoch{self.epoch}.pt").write_bytes(data)
        return True

    def final_eval(self):
        """Drop the optimizer state from the finished run's files, then validate best.pt."""
        for path in (self.last, self.best):
            if RANK in {-1, 0} and path.exists():
                content = load_torch_file(path)
                content["train"].pop("optimizer", None)
                atomic_torch_save(content, path)
        if self.best.exists():
            LOGGER.info(f"\nValidating {self.best}...")
            self.validator.args.plots = self.args.plots
            self.validator.args.compile = False
            self.metrics = self.validator(model=load_ann(self.best))
            self.metrics.pop("fitness", None)
            self.epoch += 1  # log best metrics at step epochs+1, not overwriting last epoch
            self.run_callbacks("on_fit_epoch_end")
            self.epoch -= 1


class _AtomicPath(type(Path())):
    """A Path whose write_bytes is atomic: ultralytics saves last.pt / best.pt through it."""

    def write_bytes(self, data):
        atomic_write_bytes(self, data)
        return len(data)


def _calibrate_before_training(trainer):
    """Set each lambda from activation percentiles on the first training batches (skipped on resume)."""
    if trainer.resume:
        return
    model = unwrap_model(trainer.model)
    with torch.no_grad(), calibrate_thresholds(model):
        for i, batch in enumerate(trainer.train_loader):
            if i == CALIBRATION_BATCHES:
                break
            model(trainer.preprocess_batch(batch)["img"])
    trainer.ema = ModelEMA(trainer.model)  # the EMA copy must start from the calibrated thresholds


# Arguments a resumed run may change (as ultralytics allows): the rest come from the interrupted run.
RESUME_MAY_CHANGE = {"imgsz", "batch", "device", "workers", "plots", "patience", "save_period", "cache", "val"}


def _training_state(last: Path) -> dict:
    """The training state in a spikedet last.pt (an error for any other file, or a finished run's)."""
    content = load_torch_file(last)
    load_ann(last, content)
    state = content.get("train")
    if not isinstance(state, dict) or "optimizer" not in state:
        raise fail(last, "has no training state to resume (a finished run's file, or not a last.pt)")
    return state


def _plain(value):
    """Training arguments and metrics as values a weights_only load accepts (paths and others as text)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    return str(value)


def check_dataset_yaml(path) -> dict:
    """An ultralytics dataset YAML checked before training: readable, class names, and the image folders of
    train and val found where ultralytics will look for them (it raises a traceback for each of these).

    The folders are resolved as ultralytics' check_det_dataset resolves them (a relative `path` from the
    current folder, else from its datasets folder), because when val is missing there ultralytics runs the
    YAML's `download` entry: a bash script or Python code. A `download` that is not a URL is refused as well:
    spikedet runs no code from a data file.
    """
    cfg = read_yaml(path, "dataset YAML")
    names = class_names_of(cfg, path)
    if cfg.get("nc") is not None and cfg["nc"] != len(names):
        raise fail(path, f"nc: {cfg['nc']!r} does not match the {len(names)} class names")
    download = cfg.get("download")
    if download is not None and not (isinstance(download, str) and download.startswith(("http://", "https://"))):
        raise fail(path, "its `download` entry is a script or Python code, which ultralytics runs when images are "
                         "missing; spikedet runs no code from a data file: fetch the images and remove the entry")
    root = _ultralytics_dataset_root(path, cfg)
    for split in ("train", "val"):
        if not cfg.get(split):
            raise fail(path, f"no '{split}' split")
        for entry in cfg[split] if isinstance(cfg[split], list) else [cfg[split]]:
            if not isinstance(entry, str):
                raise fail(path, f"'{split}' must name image folders or list files, got {entry!r}")
            found = (root / entry).resolve()
            if not found.exists() and entry.startswith("../"):  # as ultralytics tries it
                found = (root / entry[3:]).resolve()
            if not found.exists():
                hint = ("" if Path(cfg.get("path") or "/").is_absolute() else
                        " (ultralytics reads a relative `path` from the current folder, else from its datasets "
                        "folder: give an absolute path)")
                raise fail(path, f"{split} images not found: {found}{hint}")
    return cfg


def _ultralytics_dataset_root(path, cfg: dict) -> Path:
    """The dataset root ultralytics' check_det_dataset uses for this YAML."""
    from ultralytics.utils import DATASETS_DIR

    given = cfg.get("path")
    if given is not None and not isinstance(given, str):
        raise fail(path, f"`path` must be a folder, got {given!r}")
    root = Path(given or Path(path).parent)
    if not root.exists() and not root.is_absolute():
        root = (DATASETS_DIR / root).resolve()
    return root
