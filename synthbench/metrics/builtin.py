"""Built-in metrics plugin (entry point ``metrics``): FID, KID, PSNR, SSIM, RMSE (paper Table II)."""

from __future__ import annotations

from synthbench import hookimpl
from synthbench.metrics.distribution import FID, KID
from synthbench.metrics.paired import PSNR, RMSE, SSIM
from synthbench.metrics.radiomics import FRD

SYNTHBENCH_API = 1

#: Default metric order of ``synthbench evaluate`` (the paper's four, KID beside FID).
DEFAULT_METRICS = ("fid", "kid", "psnr", "ssim", "rmse")


@hookimpl
def register_metrics(register):
    for cls in (FID, KID, FRD, PSNR, SSIM, RMSE):
        register(cls)
