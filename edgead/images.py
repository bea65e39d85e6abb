"""Reading and decoding images (OpenCV), with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edgead.errors import ImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


def decode_image(data: bytes, name: str = "upload") -> np.ndarray:
    """Decode encoded image bytes to a BGR uint8 array (grey images become 3-channel)."""
    if not data:
        raise ImageError(f"{name}: empty image data")
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        if "MAX_IMAGE_PIXELS" in str(exc):  # over OPENCV_IO_MAX_IMAGE_PIXELS (decompression bombs)
            raise ImageError(f"{name}: image too large (more pixels than the configured limit)") from None
        raise ImageError(f"{name}: image refused by the decoder") from None
    if image is None or image.size == 0:
        raise ImageError(f"{name}: not a decodable image (JPEG, PNG, BMP, TIFF, WebP)")
    return image


def shrink_to(image: np.ndarray, max_side: int) -> np.ndarray:
    """``image`` with its longest side at most ``max_side`` (area-averaged), or itself when smaller."""
    side = max(image.shape[:2])
    if side <= max_side:
        return image
    scale = max_side / side
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


_REDUCED = {False: ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2)),
            True: ((8, cv2.IMREAD_REDUCED_GRAYSCALE_8), (4, cv2.IMREAD_REDUCED_GRAYSCALE_4),
                   (2, cv2.IMREAD_REDUCED_GRAYSCALE_2))}


def read_image_bounded(path: str | Path, max_side: int, grey: bool = False) -> np.ndarray | None:
    """A stored image as BGR with its longest side at most ``max_side``: decoded already reduced
    (1/2, 1/4, 1/8, which JPEG decodes without building the full frame) when its header says it
    is large, then shrunk (``grey``: one channel, for stored maps). None when it cannot be read."""
    import imagesize

    flag = cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR
    try:
        side = max(imagesize.get(str(path)))
    except Exception:  # no header size: read it whole, then shrink
        side = -1
    for factor, reduced in _REDUCED[grey]:
        if side // factor >= max_side:
            flag = reduced
            break
    image = cv2.imread(str(path), flag)
    return None if image is None else shrink_to(image, max_side)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as BGR uint8; ImageError naming the file when it can't be read."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read file ({exc.strerror or exc})") from None
    return decode_image(data, str(path))


def list_images(folder: str | Path) -> list[Path]:
    """Sorted image files directly inside ``folder``; ImageError if missing or empty."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"{folder}: not a directory")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ImageError(f"{folder}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    return files


def resolve_train_folder(data: str | Path) -> Path:
    """A folder of good images, or an MVTec-style category root (then ``train/good``)."""
    data = Path(data)
    candidate = data / "train" / "good"
    return candidate if candidate.is_dir() else data
