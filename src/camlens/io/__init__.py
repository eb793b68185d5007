"""Reading users' files safely: images (size limits, EXIF, modes) and audio (formats, rates).

    from camlens.io import find_images, read_image, load_audio
"""

from camlens.io.audio import MIN_DURATION_S, load_audio, read_waveform, resample
from camlens.io.images import (
    DEFAULT_MAX_ASPECT,
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    ImageFileError,
    find_images,
    read_image,
)

__all__ = [
    "DEFAULT_MAX_ASPECT",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "MIN_DURATION_S",
    "ImageFileError",
    "find_images",
    "load_audio",
    "read_image",
    "read_waveform",
    "resample",
]
