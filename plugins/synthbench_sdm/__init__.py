"""synthbench plugin: SDM (Wang et al. 2022, "Semantic Image Synthesis via Diffusion Models"),
registered through the ``synthbench`` entry point ``sdm``. See :mod:`synthbench_sdm.synthesizer`
for training, sampling and departures, :mod:`synthbench_sdm.unet` for the denoising U-Net and
:mod:`synthbench_sdm.diffusion` for the schedule, hybrid loss and samplers (diffusers)."""

from synthbench import hookimpl
from synthbench.lazy import lazy_attributes

SYNTHBENCH_API = 1

#: Registered by class path: loading the plugin (every CLI start) imports neither torch nor
#: diffusers; :mod:`synthbench_sdm.synthesizer` is imported when 'sdm' is first used.
_MODEL = "synthbench_sdm.synthesizer"

__all__ = ["SDMSynthesizer"]


@hookimpl
def register_synthesizers(register):
    register(f"{_MODEL}:SDMSynthesizer", name="sdm")


__getattr__ = lazy_attributes(_MODEL)  # ``from synthbench_sdm import ...`` imports the model on first access
