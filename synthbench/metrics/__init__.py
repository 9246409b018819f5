"""Image-quality metrics (paper Sec. "Evaluation", Table II): functional core + Metric classes.

* :mod:`synthbench.metrics.functional`: per-image PSNR / SSIM / RMSE, Frechet distance, KID;
* :mod:`synthbench.metrics.paired` (PSNR, SSIM, RMSE), :mod:`synthbench.metrics.distribution`
  (FID, KID on :mod:`synthbench.metrics.inception` features): :class:`synthbench.Metric` classes;
* :mod:`synthbench.metrics.builtin`: the plugin registering them (entry point ``metrics``);
* :mod:`synthbench.metrics.evaluate`: :func:`evaluate_folders` on complete and lung-only images.
"""

from synthbench.metrics.evaluate import evaluate_folders, load_results, save_results

__all__ = ["evaluate_folders", "load_results", "save_results"]
