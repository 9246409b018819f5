"""Built-in metrics plugin (entry point ``metrics``): FID, KID, FRD, PSNR, SSIM, RMSE (paper Table II + FRD).

Registered by class path: loading the plugin (every CLI start) imports neither torch nor the
evaluation stack; a metric's module is imported when the metric is first used.
"""

from __future__ import annotations

from synthbench import hookimpl

SYNTHBENCH_API = 1

#: Default metric order of ``synthbench evaluate`` (the paper's four, KID and FRD beside FID).
DEFAULT_METRICS = ("fid", "kid", "frd", "psnr", "ssim", "rmse")

#: Metric name -> "module:Class".
METRIC_CLASSES = {
    "fid": "synthbench.metrics.distribution:FID",
    "kid": "synthbench.metrics.distribution:KID",
    "frd": "synthbench.metrics.radiomics:FRD",
    "psnr": "synthbench.metrics.paired:PSNR",
    "ssim": "synthbench.metrics.paired:SSIM",
    "rmse": "synthbench.metrics.paired:RMSE",
}


@hookimpl
def register_metrics(register):
    for name, path in METRIC_CLASSES.items():
        register(path, name=name)
