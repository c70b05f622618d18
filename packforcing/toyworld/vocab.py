"""The toy world's closed vocabulary and the ranges its scenes are drawn from.

Internal names map to the words used in prompts; the toy text encoder hashes words, so the whole
language is the small closed set VOCAB. The hidden attributes (what a prompt does not fix and a
model must remember) are listed in HIDDEN_ATTRIBUTES.
"""

from __future__ import annotations

SIZE = 128  # frame height = width in pixels
FPS = 16  # Wan2.1 output frame rate (paper Sec. 4.1)

# --------------------------------------------------------------------------------------------------
# Vocabulary. Internal names -> the word used in prompts. The toy text encoder hashes words, so the
# whole language is this small closed set (VOCAB).
# --------------------------------------------------------------------------------------------------

#: object colour name -> nominal hue in degrees. Objects are saturated (S >= 0.55); any saturated
#: pixel is assigned to the nearest nominal hue, so the names partition the hue circle.
OBJECT_COLORS: dict[str, float] = {
    "red": 0.0, "orange": 30.0, "yellow": 58.0, "green": 120.0,
    "cyan": 185.0, "blue": 228.0, "purple": 275.0, "pink": 325.0,
}
#: background colour name -> (hue, (sat lo, sat hi), (val lo, val hi)). Backgrounds are muted
#: (S <= 0.36), so they never pass the object saturation threshold.
BACKGROUND_COLORS: dict[str, tuple[float, tuple[float, float], tuple[float, float]]] = {
    "gray": (0.0, (0.0, 0.04), (0.50, 0.62)),
    "white": (40.0, (0.0, 0.04), (0.88, 0.95)),
    "blue": (220.0, (0.20, 0.32), (0.55, 0.70)),
    "green": (125.0, (0.20, 0.32), (0.50, 0.65)),
    "purple": (275.0, (0.18, 0.28), (0.52, 0.66)),
    "brown": (28.0, (0.28, 0.36), (0.42, 0.52)),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "ring", "diamond")
#: texture kind -> prompt word ("solid" is not spoken: "a red circle" is solid)
TEXTURES: dict[str, str] = {"solid": "", "striped": "striped", "dotted": "dotted"}
#: motion kind -> prompt word
MOTIONS: dict[str, str] = {"bounce": "bouncing", "drift": "drifting", "orbit": "orbiting", "still": "resting"}
#: background kind -> prompt word
BACKGROUND_KINDS: dict[str, str] = {"flat": "plain", "gradient": "gradient", "stripes": "banded", "checker": "checkered"}
#: size word -> exact radius range in pixels (half the bounding-box side, for every shape)
SIZE_CLASSES: dict[str, tuple[int, int]] = {"small": (10, 13), "large": (16, 21)}
_SIZE_SPLIT = 14.5  # radius reading below -> "small"

_FUNCTION_WORDS = ("a", "and", "on", "background", "with", "passing", "black", "bar")
VOCAB: tuple[str, ...] = tuple(sorted(
    set(OBJECT_COLORS) | set(BACKGROUND_COLORS) | set(SHAPES) | {w for w in TEXTURES.values() if w}
    | set(MOTIONS.values()) | set(BACKGROUND_KINDS.values()) | set(SIZE_CLASSES) | set(_FUNCTION_WORDS)
))

#: attributes decided at t=0 that the prompt does not fix (what memory must carry)
HIDDEN_ATTRIBUTES: tuple[str, ...] = (
    "object.rgb (hue +-7 deg, saturation, value around the named colour)", "object.radius (within its size class)",
    "object.tex_rgb / tex_angle / tex_period (texture tone, orientation, scale)",
    "background.rgb / rgb2 / period / angle / offset (exact colours and pattern geometry)",
    "occluder.width / rgb",
)

#: absence (seconds fully out of view) of drifting objects: default scenes (long videos) ...
LONG_ABSENCE_S: tuple[float, float] = (3.0, 6.0)
#: ... and training clips (5 s)
SHORT_ABSENCE_S: tuple[float, float] = (0.25, 1.5)
_LONG_BAR_GAP_S = (2.0, 5.0)
_SHORT_BAR_GAP_S = (0.5, 2.0)

_HUE_JITTER = 7.0
_OBJ_SAT = (0.55, 1.0)
_OBJ_VAL = (0.72, 1.0)
_TEX_TONE = (0.5, 0.7)  # texture tone = object value x this
_BG_TONE = 0.65  # second background tone = first x this
