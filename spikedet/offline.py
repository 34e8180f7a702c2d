"""Keep ultralytics from reaching the network.

spikedet/__init__.py sets YOLO_OFFLINE=1 (ultralytics then skips its online probes, downloads fail fast and
the AMP check on CUDA is skipped instead of fetching weights). One call still goes out: every dataset check
looks for Arial.ttf and, when it is not in the ultralytics config folder, sends an HTTP request for it.
Offline, the lookup is pointed at a font already on disk (matplotlib ships DejaVu Sans).
"""
import os
from pathlib import Path


def _local_font(font="Arial.ttf"):
    from matplotlib import font_manager
    from ultralytics.utils import USER_CONFIG_DIR

    own = USER_CONFIG_DIR / Path(font).name
    return own if own.exists() else Path(font_manager.findfont("DejaVu Sans"))


def guard_ultralytics_downloads():
    """When offline, replace ultralytics' font download with the local lookup (idempotent)."""
    if os.environ.get("YOLO_OFFLINE", "").lower() not in {"1", "true"}:
        return
    import ultralytics.data.utils
    import ultralytics.utils.checks
    import ultralytics.utils.plotting

    for module in (ultralytics.utils.checks, ultralytics.data.utils, ultralytics.utils.plotting):
        module.check_font = _local_font
