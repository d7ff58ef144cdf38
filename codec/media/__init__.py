"""Media files: images (``image_io``), audio (``audio_io``), channel conversion (``channels``) and finding files
(``files``). Beside the model core: imports only ``codec.errors`` and ``codec.store``.

>>> from codec.media import read_image, read_audio
>>> img = read_image("photo.png")            # ImageData: img.pixels (C, H, W) float32 in [0, 1]
>>> clip = read_audio("speech.flac")         # AudioData: clip.samples (C, T) float32 at clip.sample_rate
"""

from codec.media.audio_io import (
    AUDIO_EXTENSIONS,
    AudioData,
    is_audio_file,
    iter_audio_blocks,
    read_audio,
    resample,
    write_audio,
)
from codec.media.channels import to_audio_channels, to_image_channels
from codec.media.files import find_files
from codec.media.image_io import IMAGE_EXTENSIONS, ImageData, is_image_file, read_image, write_image

__all__ = [
    "AUDIO_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "AudioData",
    "ImageData",
    "find_files",
    "is_audio_file",
    "is_image_file",
    "iter_audio_blocks",
    "read_audio",
    "read_image",
    "resample",
    "to_audio_channels",
    "to_image_channels",
    "write_audio",
    "write_image",
]
