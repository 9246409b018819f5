"""synthbench plugin: SEAN (Zhu et al., CVPR 2020), registered through the ``synthbench``
entry point ``sean``. See :mod:`synthbench_sean.synthesizer` for training, style modes and
departures, :mod:`synthbench_sean.networks` for the style encoder, SEAN norm and generator."""

from synthbench import hookimpl
from synthbench.lazy import lazy_attributes

SYNTHBENCH_API = 1

#: Registered by class path: loading the plugin (every CLI start) does not import torch or the
#: networks; :mod:`synthbench_sean.synthesizer` is imported when 'sean' is first used.
_MODEL = "synthbench_sean.synthesizer"

__all__ = ["STYLE_MODES", "SEANSynthesizer"]


@hookimpl
def register_synthesizers(register):
    register(f"{_MODEL}:SEANSynthesizer", name="sean")


__getattr__ = lazy_attributes(_MODEL)  # ``from synthbench_sean import ...`` imports the model on first access
