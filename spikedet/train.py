"""ANN training: ultralytics' detection trainer, running our dual-error Tiny-YOLO.

`train(...)` resolves the model config with its overrides into one YAML file (the exact network trained,
kept beside the runs and recorded in every checkpoint), then hands it to a DetectionTrainer subclass that
(1) builds SpikingYOLO instead of ultralytics' DetectionModel, (2) sets every lambda from activation
percentiles on the first training batches before the first step, and (3) writes checkpoints atomically.
"""
import hashlib
from pathlib import Path
from typing import Optional, Union

import torch
import yaml
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import LOGGER
from ultralytics.utils.torch_utils import ModelEMA, unwrap_model

from .activation import calibrate_thresholds
from .darknet import transfer_weights
from .errors import SpikedetError, fail
from .fileio import atomic_write_bytes, atomic_write_text, load_torch_file
from .model import SpikingYOLO, load_model_config
from .offline import guard_ultralytics_downloads

guard_ultralytics_downloads()

CALIBRATION_BATCHES = 8


def train(data: Union[str, Path], model: Union[str, Path] = "yolov3-tiny", epochs: int = 100, imgsz: int = 416,
          batch: int = 16, device: Optional[str] = None, resume: Union[bool, str] = False,
          project: Union[str, Path] = "runs/train", name: str = "exp", scale: Optional[str] = None,
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
    if not Path(data).is_file():
        raise fail(data, "dataset YAML not found")
    args = {"exist_ok": False, **ultralytics_args, "data": str(data), "epochs": epochs, "imgsz": imgsz,
            "batch": batch, "project": str(Path(project).resolve()), "name": name}
    if device is not None:
        args["device"] = device
    if resume:
        last = Path(resume if isinstance(resume, (str, Path)) else model)
        if last.suffix != ".pt" or not last.is_file():
            raise fail(last, "resume needs the last.pt of an interrupted run")
        load_ann_checkpoint(last)  # fail clearly on a checkpoint of the wrong kind
        args.update(model=str(last), resume=str(last))
    else:
        config = load_model_config(model, scale=scale, pool=pool, dual_error=dual_error)
        if pretrained_darknet:
            if pretrained:
                raise SpikedetError("give pretrained weights or pretrained darknet weights, not both")
            config["pretrained_darknet"] = _darknet_source(pretrained_darknet, darknet_cfg)
        args["model"] = str(_write_resolved_config(config, Path(project)))
        if pretrained:
            args["pretrained"] = str(pretrained)
    trainer = SpikingTrainer(overrides=args)
    trainer.train()
    return Path(trainer.best if Path(trainer.best).exists() else trainer.last)


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
    """DetectionTrainer that builds SpikingYOLO, calibrates lambda before training, saves atomically."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.wdir, self.last, self.best = (_AtomicPath(p) for p in (self.wdir, self.last, self.best))
        self.add_callback("on_pretrain_routine_end", _calibrate_before_training)

    def get_model(self, cfg=None, weights=None, verbose=True):
        model = SpikingYOLO(cfg, nc=self.data["nc"], ch=self.data["channels"], verbose=verbose)
        model = self.set_model_names_for_load(model)
        if weights:
            model.load(weights)
        elif model.yaml.get("pretrained_darknet"):
            source = model.yaml["pretrained_darknet"]
            filled = transfer_weights(source["cfg"], source["weights"], model)
            LOGGER.info(f"spikedet: {filled} conv + batch-norm blocks start from {source['weights']}")
        return model


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


def load_ann_checkpoint(path: Union[str, Path], ckpt: dict = None) -> SpikingYOLO:
    """The trained network in a spikedet/ultralytics checkpoint, in float32 eval mode; a clear error otherwise.

    ckpt: the file's content when the caller has already read it.
    """
    ckpt = load_torch_file(path) if ckpt is None else ckpt
    model = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else None
    if not isinstance(model, SpikingYOLO):
        kind = type(model if model is not None else ckpt).__name__
        raise fail(path, f"not a spikedet ANN checkpoint (it holds a {kind}, expected SpikingYOLO)")
    return model.float().eval()
