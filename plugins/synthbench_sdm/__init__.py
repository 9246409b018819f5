"""synthbench plugin: SDM (Wang et al. 2022, "Semantic Image Synthesis via Diffusion Models"),
registered through the ``synthbench`` entry point ``sdm``. See :mod:`synthbench_sdm.synthesizer`
for training, sampling and departures, :mod:`synthbench_sdm.unet` for the denoising U-Net and
:mod:`synthbench_sdm.diffusion` for the schedule, hybrid loss and samplers (diffusers)."""

from synthbench import hookimpl
from synthbench_sdm.synthesizer import SDMSynthesizer

SYNTHBENCH_API = 1

__all__ = ["SDMSynthesizer"]


@hookimpl
def register_synthesizers(register):
    register(SDMSynthesizer)
