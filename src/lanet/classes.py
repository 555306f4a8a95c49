"""The canonical expression classes shared by every dataset.

All loaders map their source label ids into this one order, so a model trained on one dataset can be
evaluated on another. The first seven are the basic classes used by RAF-DB and 7-class AffectNet (the
order of LA-Net's Figure 1); ``contempt`` is the eighth class of FERPlus and 8-class AffectNet.

=====  ==========  ========  ==========  ===============  =====================
 id     class       RAF-DB    FERPlus     AffectNet        short
=====  ==========  ========  ==========  ===============  =====================
  0     anger        6         4 (vote)    6                An
  1     disgust      3         5           5                Di
  2     fear         2         6           4                Fe
  3     happiness    4         1           1                Ha
  4     sadness      5         3           2                Sa
  5     surprise     1         2           3                Su
  6     neutral      7         0           0                Ne
  7     contempt     -         7           7                Co
=====  ==========  ========  ==========  ===============  =====================

(FERPlus ids are the positions of its vote columns: neutral, happiness, surprise, sadness, anger, disgust,
fear, contempt, unknown, NF.)
"""

from __future__ import annotations

from .errors import LanetError

CLASSES: tuple[str, ...] = (
    "anger",
    "disgust",
    "fear",
    "happiness",
    "sadness",
    "surprise",
    "neutral",
    "contempt",
)
SHORT: tuple[str, ...] = ("An", "Di", "Fe", "Ha", "Sa", "Su", "Ne", "Co")

# Common alternative spellings users have in their own annotation files.
_ALIASES = {
    "angry": "anger",
    "disgusted": "disgust",
    "fearful": "fear",
    "afraid": "fear",
    "happy": "happiness",
    "joy": "happiness",
    "sad": "sadness",
    "surprised": "surprise",
    "contemptuous": "contempt",
    "calm": "neutral",
}

# Asymmetric noise of the paper's Table 5: every class flips to its most confusable class.
ASYMMETRIC_FLIP: dict[str, str] = {
    "anger": "disgust",
    "disgust": "anger",
    "fear": "surprise",
    "happiness": "neutral",
    "sadness": "neutral",
    "surprise": "anger",
    "neutral": "sadness",
    "contempt": "neutral",
}


def class_names(num_classes: int) -> tuple[str, ...]:
    """The first ``num_classes`` canonical names (7 or 8)."""
    if num_classes not in (7, 8):
        raise LanetError(f"num_classes must be 7 or 8, got {num_classes}")
    return CLASSES[:num_classes]


def class_id(name_or_id: str | int, num_classes: int = 8) -> int:
    """Parse a class given as a canonical name, a common alias, or an integer id (as int or string)."""
    if isinstance(name_or_id, int) or (isinstance(name_or_id, str) and name_or_id.strip().lstrip("-").isdigit()):
        value = int(name_or_id)
        if not 0 <= value < num_classes:
            raise LanetError(f"class id {value} is outside 0..{num_classes - 1}")
        return value
    key = str(name_or_id).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in CLASSES[:num_classes]:
        known = ", ".join(CLASSES[:num_classes])
        raise LanetError(f"unknown class {name_or_id!r}; expected one of {known} or an id 0..{num_classes - 1}")
    return CLASSES.index(key)
