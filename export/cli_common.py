"""Argument parsers shared by the CLI commands."""

from __future__ import annotations

import argparse


def parse_size(text: str) -> tuple[int, int]:
    """'224' -> (224, 224); '256x512' (HxW) -> (256, 512)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r}: expected N or HxW") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or any(p <= 0 or p % 32 for p in parts):
        raise argparse.ArgumentTypeError(f"size {text!r}: height and width must be positive multiples of 32")
    return parts[0], parts[1]


def parse_roi(text: str) -> tuple[tuple[float, float, float, float], str]:
    """'x,y,w,h' -> (box, units): fractions when every value is <= 1, else pixels."""
    try:
        box = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"roi {text!r}: expected x,y,w,h") from None
    if len(box) != 4 or box[2] <= 0 or box[3] <= 0:
        raise argparse.ArgumentTypeError(f"roi {text!r}: expected x,y,w,h with positive width and height")
    units = "fraction" if all(0 <= v <= 1 for v in box) else "px"
    return box, units
