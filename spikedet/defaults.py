"""Every default and every set of choices, in one place: the CLI, the Python API and the modules read them
here (ultralytics keeps its cfg/default.yaml the same way)."""

CHOICES = {
    "spikes": ("burst", "signed", "binary"),  # events a neuron may emit per step (snn.neurons.NEURON_KINDS)
    "reset": ("subtract", "zero"),
    "normalization": ("channel", "layer"),  # one scale per output channel (Spiking-YOLO) or per layer
    "scales": ("percentile", "mse"),  # thresholds from calibration images (model.calibration)
    "leaky": ("keep", "relu"),  # leaky ReLU units: neurons with negative events, or replaced by ReLU
    "negative_events": ("whole", "fine"),  # leaky neurons' negative events worth one positive or its slope alpha
    "resize": ("letterbox", "stretch"),
    "pool": ("max", "avg", "conv"),  # what a model config's max-pools become
    "granularity": ("layer", "channel"),  # one dual-error lambda per layer or per channel
    "lambda_grad": ("residue", "zero"),
    "method": ("steps", "closed-form"),  # how an SNN is run (snn.engine; the closed form: burst neurons only)
    "distill_init": ("mse", "percentile"),  # where a distilled student's lambda starts (spikedet.distill)
    "distill_augment": ("crop", "mosaic_mixup"),  # a distillation's training views (spikedet.distill.images)
}

DEFAULTS = {
    # images
    "imgsz": 416,
    # conversion
    "calibration_count": 32,
    "scales": "percentile",
    "percentile": 99.99,
    "threshold_scale": 1.0,  # every threshold times this: a higher one clips less, quantizes coarser
    "v_init": 0.5,
    "spikes": "burst",
    "reset": "subtract",
    "normalization": "channel",
    "leaky": "keep",
    # simulation. chunk: steps per batched layer call; memory grows with it, not with T (docs/speed.md has
    # the measurements behind this value)
    "chunk": 8,
    "timesteps_eval": (8, 16, 32, 64, 128, 256),
    "timesteps_detect": 16,  # when the SNN file does not say which T it was converted for
    "max_timesteps": 4096,  # a larger T is refused unless asked for explicitly (hours on a CPU)
    "first_copies": None,  # neurons per channel in the first layer; None: what the network was trained for, else 1
    "max_first_copies": 64,  # neurons per channel in the first layer (spikedet.snn.population)
    "negative_events": None,  # None: what the network was trained for (DualErrorSettings.fine_negative), else whole
    # networks read from files: refused before anything is allocated when they exceed these
    "max_channels": 8192,  # a yolo config layer's channels, and its classes
    "max_kernel": 31,  # a yolo config layer's kernel or pool size
    "max_weight_gb": 4.0,  # float32 weights of a whole network, estimated from its config or darknet cfg
    # scoring: every detection above conf, class-wise NMS; darknet networks as darknet scores them
    "conf_eval": 0.001,
    "iou_eval": 0.7,
    "iou_eval_darknet": 0.45,
    "teacher_ap_conf": 0.25,  # the teacher's detections at or above this score stand in for labels (distill.teacher_ap)
    "voc_split": "test",  # VOC's scoring split; a tree that lacks its files is told which image sets it has
    "batch_cpu": 1,  # images per simulation batch on the CPU (larger batches were slower per image there)
    "batch_gpu": 8,
    # detection on a user's images
    "conf_detect": 0.25,
    "iou_detect": 0.45,
    "project_detect": "runs/detect",
    "project_train": "runs/train",
    "name": "exp",
    # training
    "model": "yolov3-tiny",
    "epochs": 100,
    "batch_train": 16,
    "workers": 8,
    "seed": 0,
    # distillation of a darknet network (spikedet.distill)
    "levels_distill": (8, 16),  # one drawn per step: the same thresholds serve T = 8 and T = 16
    "epochs_distill": 30,
    "batch_distill": 8,
    "lr_distill": 1e-5,  # Adam, weights and batch-norm affine parameters: small, so the float network survives
    "lam_lr_distill": 1e-2,  # Adam, the thresholds lambda
    "feature_weight_distill": 25.0,  # the per-layer activation term against the head-output terms
    "quant_drop_distill": 0.0,  # the share of dual-error elements passing their float value in training (QDrop)
    "ema_distill": 0.0,  # the decay of the student's weight average (0: the last step's weights are the result)
    "binary_steps_distill": 0,  # T of the binary SNN the non-float steps train through (0: the dual error)
    "burn_in_distill": 0,  # steps its read-out leaves out (`eval --burn-in`)
    "float_share_distill": 0.0,  # the share of steps that distill the student's float network (errors off)
    "save_minutes_distill": 10.0,  # how often a distillation saves its resumable state
}

DEMO = {  # `spikedet demo` (spikedet.demo)
    "model": "yolov3-tiny", "scale": "n", "imgsz": 192, "epochs": 50, "batch": 16, "levels": 16,
    "timesteps": (4, 8, 16, 32, 64, 128, 256), "sample_images": 4,
    "eval_batch": 8,  # the batch its figures were measured with (192 px, width n)
}
