"""Image-quality metrics (paper Sec. "Evaluation", Table II): functional core + Metric classes.

* :mod:`synthbench.metrics.functional`: per-image PSNR / SSIM / RMSE, Frechet distance, KID;
* :mod:`synthbench.metrics.paired` (PSNR, SSIM, RMSE), :mod:`synthbench.metrics.distribution`
  (FID, KID on :mod:`synthbench.metrics.inception` features), :mod:`synthbench.metrics.radiomics`
  (FRD, optional): :class:`synthbench.Metric` classes (conventions: docs/metrics.md);
* :mod:`synthbench.metrics.builtin`: the plugin registering them (entry point ``metrics``);
* :mod:`synthbench.metrics.evaluate`: :func:`evaluate_folders` on complete and lung-only images.
"""

__all__ = ["evaluate_folders", "load_results", "save_results"]


def __getattr__(name: str):
    """Import :mod:`synthbench.metrics.evaluate` on first use: the metrics plugin is loaded at
    every CLI start and must not pay for the evaluation stack (pandas, PIL, Inception)."""
    if name in __all__:
        from synthbench.metrics import evaluate

        return getattr(evaluate, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
