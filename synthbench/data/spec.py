"""Data-set description: which label classes exist, which region completion uses, intensity kind.

Every consumer (engine, completion step, region-only metrics, downstream U-Net) takes classes and
the region from here; nothing assumes the paper's four classes.

The **region** is the part of a slice that completion pastes and that the paper's "lung-only"
metrics compare (paper Sec. "Task" and "Evaluation"). It is explicit, never guessed:

* ``"lung"``: classes with role 'lung' plus the lesion classes (the paper's lung region; needs a
  class with role 'lung').
* ``"threshold"``: for Hounsfield-unit data without a lung mask. ``synthbench data prepare``
  derives a class 'lung' (role 'lung') from the CT itself: background pixels below
  ``lung_threshold_hu`` (default -320 HU) inside the body (see
  :func:`synthbench.data.preprocess.threshold_lung`); the region is then that class plus lesions.
* ``"lesion"``: the lesion classes only. Metrics, folders and figures say "lesion", not "lung".
* ``"whole"``: the whole slice. The complete image is the synthetic image, and there are no
  region-only metrics (there is no region to compare on its own).

Without a ``region`` the region is ``"lung"`` when a class has the role 'lung', and an error
otherwise (the choice between lesion, whole and threshold changes every metric).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from synthbench.errors import SynthbenchError

Role = Literal["background", "lung", "lesion", "other"]
Intensity = Literal["hu", "scaled"]
Region = Literal["lung", "threshold", "lesion", "whole"]
REGIONS = ("lung", "threshold", "lesion", "whole")
#: Lung threshold of the "threshold" region: aerated lung lies below about -320 HU (a common
#: lung-segmentation threshold, e.g. Hu, Hoffman, Reinhardt, IEEE TMI 20(6), 2001).
DEFAULT_LUNG_THRESHOLD_HU = -320.0

#: Overlay colours of the paper's figures: lung red, ground-glass blue, consolidation green.
DEFAULT_COLOURS = {
    "background": (0, 0, 0),
    "lung": (220, 40, 40),
    "ground_glass": (40, 90, 230),
    "consolidation": (40, 200, 60),
    "infection": (40, 90, 230),
    "pleural_effusion": (230, 200, 40),
}


@dataclass(frozen=True)
class ClassInfo:
    """One label class. ``role`` 'lung' and 'lesion' classes together make the lung region."""

    id: int
    name: str
    role: Role
    colour: tuple[int, int, int] = (255, 255, 255)


@dataclass(frozen=True)
class DatasetSpec:
    """Classes (ids ``0..C-1`` in order), the completion region, the intensity kind and the HU window.

    ``region``: see the module docstring (``None`` = ``"lung"`` when a lung class exists).
    ``intensity == "hu"``: images are Hounsfield units, windowed to ``hu_window`` and scaled to
    ``[-1, 1]`` (paper: [-600, 1500]). ``"scaled"``: images are already display-scaled
    (e.g. 8-bit PNG 0..255) and are only rescaled linearly from ``value_range`` to ``[-1, 1]``.
    """

    name: str
    classes: tuple[ClassInfo, ...]
    intensity: Intensity = "hu"
    hu_window: tuple[float, float] = (-600.0, 1500.0)
    value_range: tuple[float, float] = (0.0, 255.0)
    extra: dict[str, Any] = field(default_factory=dict)
    region: Region | None = None
    lung_threshold_hu: float = DEFAULT_LUNG_THRESHOLD_HU

    def __post_init__(self) -> None:
        ids = [c.id for c in self.classes]
        if ids != list(range(len(ids))):
            raise SynthbenchError(f"data set {self.name!r}: class ids must be 0..{len(ids) - 1} in order, got {ids}")
        if len(ids) < 2:
            raise SynthbenchError(f"data set {self.name!r}: needs at least two classes")
        if self.intensity not in ("hu", "scaled"):
            raise SynthbenchError(f"data set {self.name!r}: intensity must be 'hu' or 'scaled', got {self.intensity!r}")
        if not self.lesion_ids:
            raise SynthbenchError(f"data set {self.name!r}: declares no lesion class")
        self._check_region()

    def _check_region(self) -> None:
        has_lung = any(c.role == "lung" for c in self.classes)
        region = self.region
        if region is None:
            if not has_lung:
                raise SynthbenchError(
                    f"data set {self.name!r}: no class has the role 'lung', so there is no lung region; declare "
                    "region = 'lesion' (lesion classes only), 'whole' (whole slice) or 'threshold' (lung derived "
                    "from Hounsfield units)")
            object.__setattr__(self, "region", "lung")
            return
        if region not in REGIONS:
            raise SynthbenchError(f"data set {self.name!r}: region must be one of {', '.join(REGIONS)}, got {region!r}")
        if region == "lung" and not has_lung:
            raise SynthbenchError(
                f"data set {self.name!r}: region 'lung' needs a class with the role 'lung'; declare region = "
                "'lesion', 'whole' or 'threshold' instead")
        if region == "threshold" and self.intensity != "hu":
            raise SynthbenchError(
                f"data set {self.name!r}: region 'threshold' derives the lung from Hounsfield units, but the "
                "intensity is 'scaled'; declare region = 'lesion' or 'whole'")
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def region_ids(self) -> tuple[int, ...]:
        """Classes of the completion / region-only region (module docstring)."""
        if self.region == "whole":
            return tuple(c.id for c in self.classes)
        if self.region == "lesion":
            return self.lesion_ids
        return tuple(c.id for c in self.classes if c.role in ("lung", "lesion"))

    @property
    def lung_region_ids(self) -> tuple[int, ...]:
        """Alias of :attr:`region_ids` (the paper's "lung region" when ``region`` is lung)."""
        return self.region_ids

    @property
    def region_key(self) -> str | None:
        """Name of the region-only setting, folders and figures: 'lung', 'lesion', or None (whole)."""
        return {"lung": "lung", "threshold": "lung", "lesion": "lesion"}.get(str(self.region))

    @property
    def region_label(self) -> str:
        """Human description of the region, for reports and notes."""
        return {
            "lung": "lung (lung mask and lesions)",
            "threshold": f"lung derived from HU (below {self.lung_threshold_hu:g} HU inside the body) and lesions",
            "lesion": "lesion classes only (the data set has no lung mask)",
            "whole": "whole slice (no lung mask; no region-only metrics)",
        }[str(self.region)]

    def with_threshold_lung(self) -> DatasetSpec:
        """The spec after ``data prepare`` derived the lung class of the 'threshold' region."""
        if self.region != "threshold" or any(c.role == "lung" for c in self.classes):
            return self
        lung = ClassInfo(self.num_classes, "lung", "lung", DEFAULT_COLOURS["lung"])
        return replace(self, classes=(*self.classes, lung))

    @property
    def lesion_ids(self) -> tuple[int, ...]:
        return tuple(c.id for c in self.classes if c.role == "lesion")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["classes"] = [asdict(c) for c in self.classes]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DatasetSpec:
        try:
            classes = tuple(
                ClassInfo(int(c["id"]), str(c["name"]), c["role"], tuple(c.get("colour", DEFAULT_COLOURS.get(c["name"], (255, 255, 255)))))
                for c in d["classes"]
            )
            return cls(
                name=str(d.get("name", "dataset")),
                classes=classes,
                intensity=d.get("intensity", "hu"),
                hu_window=tuple(d.get("hu_window", (-600.0, 1500.0))),
                value_range=tuple(d.get("value_range", (0.0, 255.0))),
                extra=dict(d.get("extra", {})),
                region=d.get("region"),
                lung_threshold_hu=float(d.get("lung_threshold_hu", DEFAULT_LUNG_THRESHOLD_HU)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SynthbenchError(f"invalid data-set description: {exc}") from exc


def make_classes(names_roles: list[tuple[str, Role]]) -> tuple[ClassInfo, ...]:
    return tuple(
        ClassInfo(i, name, role, DEFAULT_COLOURS.get(name, (255, 255, 255))) for i, (name, role) in enumerate(names_roles)
    )


#: The paper's classes (and the phantom's): background, lung, ground-glass opacity, consolidation.
PAPER_CLASSES = make_classes(
    [("background", "background"), ("lung", "lung"), ("ground_glass", "lesion"), ("consolidation", "lesion")]
)
