"""Speaker colours: a fixed, colour-blind-friendly palette indexed by lane (pure, no Qt)."""

from __future__ import annotations

# Okabe-Ito and Tableau-like hues, ordered so that neighbours differ strongly.
PALETTE: tuple[str, ...] = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # green
    "#CC79A7",  # purple-pink
    "#D55E00",  # vermilion
    "#56B4E9",  # sky blue
    "#8C6D31",  # brown
    "#7F3C8D",  # violet
    "#3C9E9E",  # teal
    "#B8A100",  # olive yellow
    "#E45756",  # red
    "#6B6ECF",  # indigo
)

BACKGROUND = "#FFFFFF"
GRID = "#D9DDE3"
CURSOR = "#C0392B"
TEXT = "#2B2F36"
LEVEL = "#4C9A5B"
VAD = "#2E6DB4"


def color_for(index: int) -> str:
    """The palette colour of lane ``index`` (cycles)."""
    return PALETTE[index % len(PALETTE)]


def lighter(hex_color: str, amount: float = 0.55) -> str:
    """``hex_color`` mixed with white by ``amount`` (0: unchanged, 1: white)."""
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    mix = [round(c + (255 - c) * amount) for c in (r, g, b)]
    return "#" + "".join(f"{c:02X}" for c in mix)
