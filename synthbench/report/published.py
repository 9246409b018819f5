"""The paper's published numbers (Jiang et al. 2021, Tables II-V), transcribed from paper.md.

These are shown in the report's "Published in the paper (not measured here)" section only and
are never mixed into measured rows. Values are kept as the exact strings printed in the paper
(so "26.50" keeps its trailing zero); :func:`as_float` converts one. The paper's FID values are
far below the usual FID scale and its convention is not stated; synthbench measures FID in the
standard pytorch-fid convention, so published and measured FID are not comparable.
"""

from __future__ import annotations

CITATION = (
    'Jiang, Chen, Loew, Ko, "COVID-19 CT Image Synthesis with a Conditional Generative Adversarial '
    'Network", IEEE J. Biomed. Health Inform. 25(2), 2021 (arXiv 2007.14638)'
)

#: Table II column order: complete images, then lung-only images.
TABLE2_COLUMNS = ("FID", "PSNR (dB)", "SSIM", "RMSE", "lung FID", "lung PSNR (dB)", "lung SSIM", "lung RMSE")

#: Table II, image quality: method -> values in TABLE2_COLUMNS order.
TABLE2: dict[str, tuple[str, ...]] = {
    "ours": ("0.0327", "26.89", "0.8936", "0.0813", "0.3641", "28.17", "0.8959", "0.2747"),
    "SEAN": ("0.0341", "26.69", "0.8922", "0.0837", "0.3575", "28.02", "0.8952", "0.2795"),
    "SPADE": ("0.0389", "26.50", "0.8903", "0.0854", "0.4812", "27.79", "0.8928", "0.2864"),
    "pix2pixHD": ("0.0430", "26.63", "0.8893", "0.0840", "0.4283", "27.82", "0.8910", "0.2856"),
    "pix2pix": ("0.0611", "26.56", "0.8870", "0.0913", "8.4077", "26.56", "0.8855", "0.3301"),
}

#: Tables III and IV column order (Dice %). The paper's "GGO" is named as the data sets name the
#: class (``ground_glass``; :data:`synthbench.report.settings.PAPER_CLASS_NAMES`), so measured and
#: published tables use one naming.
DICE_COLUMNS = ("ground_glass", "consolidation", "infection")

#: Table III, replace real training images with synthetic ones ("ours" unless named), Dice %.
TABLE3: dict[str, tuple[str, str, str]] = {
    "0%": ("87.55", "84.88", "89.57"),
    "10%": ("87.34", "85.91", "89.35"),
    "20%": ("84.22", "84.30", "86.67"),
    "30%": ("87.43", "86.01", "89.32"),
    "40%": ("87.07", "85.81", "88.92"),
    "50%": ("86.98", "85.58", "89.19"),
    "50% from SEAN": ("85.23", "83.54", "86.04"),
    "50% from SPADE": ("83.04", "81.89", "85.99"),
    "50% from pix2pixHD": ("81.24", "80.20", "83.22"),
    "50% from pix2pix": ("75.33", "72.01", "79.10"),
}

#: Table IV, add synthetic images ("ours") on top of all real ones, Dice %.
TABLE4: dict[str, tuple[str, str, str]] = {
    "0%": ("87.55", "84.88", "89.57"),
    "10%": ("87.65", "86.12", "89.67"),
    "20%": ("87.87", "85.52", "89.87"),
    "30%": ("87.99", "86.33", "89.78"),
    "40%": ("88.33", "87.25", "90.19"),
    "50%": ("88.16", "87.09", "90.06"),
}

#: Table V column order.
TABLE5_COLUMNS = ("FID", "PSNR", "infection Dice %")

#: Table V, ablations of "ours".
TABLE5: dict[str, tuple[str, str, str]] = {
    "ours": ("0.0327", "26.89", "89.19"),
    "w/o DESUM": ("0.0395", "26.77", "84.60"),
    "DESUM weight from F_global": ("0.0355", "26.70", "87.88"),
    "fixed a = 0.5": ("0.0380", "26.51", "85.87"),
    "w/o DFM": ("0.0381", "26.62", "86.10"),
    "DFM weight from D2^i": ("0.0340", "26.75", "88.84"),
    "fixed b = 0.5": ("0.0404", "26.71", "83.50"),
    "one discriminator": ("0.0579", "26.55", "79.44"),
    "three discriminators": ("0.0330", "26.80", "88.93"),
    "one generator": ("0.0604", "26.51", "76.03"),
    "three generators": ("0.0325", "26.85", "89.01"),
}

#: Every published table: key -> (title, row-header name, column names, rows).
TABLES: dict[str, tuple[str, str, tuple[str, ...], dict[str, tuple[str, ...]]]] = {
    "II": ("Table II: image quality (complete and lung-only images)", "method", TABLE2_COLUMNS, TABLE2),
    "III": ("Table III: replace real training images with synthetic ones, Dice %", "synthetic share", DICE_COLUMNS, TABLE3),
    "IV": ("Table IV: add synthetic images to all real ones, Dice %", "synthetic share", DICE_COLUMNS, TABLE4),
    "V": ("Table V: ablations of the proposed model", "variant", TABLE5_COLUMNS, TABLE5),
}

#: Table II's direction per column (for marking the best published value).
TABLE2_HIGHER_IS_BETTER = tuple(any(m in c.split() for m in ("PSNR", "SSIM")) for c in TABLE2_COLUMNS)


def as_float(value: str) -> float:
    """A published value as a float."""
    return float(value)
