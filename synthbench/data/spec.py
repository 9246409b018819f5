"""Data-set description: which label classes exist, which form the lung region, intensity kind.

Every consumer (engine, completion step, lung-only metrics, downstream U-Net) takes classes from
here; nothing assumes the paper's four classes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from synthbench.errors import SynthbenchError

Role = Literal["background", "lung", "lesion", "other"]
Intensity = Literal["hu", "scaled"]

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
    """Classes (ids ``0..C-1`` in order), the intensity kind and the HU window.

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

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def lung_region_ids(self) -> tuple[int, ...]:
        """Classes inside the lungs (lung parenchyma and lesions): the completion/lung-only region."""
        return tuple(c.id for c in self.classes if c.role in ("lung", "lesion"))

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
