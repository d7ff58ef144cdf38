"""Finding media files: every image or audio file under a folder, as training, tokenizing and the CLI see them."""

import os
from pathlib import Path

from codec.media.audio_io import AUDIO_EXTENSIONS, is_audio_file
from codec.media.image_io import IMAGE_EXTENSIONS, is_image_file


def visible_files(root: str | os.PathLike) -> list[str]:
    """Every file under ``root``, recursively, as sorted POSIX paths relative to ``root``: hidden files and
    directories (names starting with ".") left out, symlinked files listed, symlinked directories not followed."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [(Path(dirpath) / name).relative_to(root).as_posix() for name in filenames if not name.startswith(".")]
    return sorted(found)


def find_files(root: str | os.PathLike, modality: str) -> list[str]:
    """Media files under ``root``, recursively, as sorted POSIX paths relative to ``root``: the ``visible_files``
    with an extension of the modality.

    Raises:
        FileNotFoundError: ``root`` is not a directory.
        ValueError: no file with a known extension.
    """
    if modality not in ("image", "audio"):
        raise ValueError(f"modality must be 'image' or 'audio', got {modality!r}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data directory {root} does not exist or is not a directory")
    wanted = is_image_file if modality == "image" else is_audio_file
    found = [name for name in visible_files(root) if wanted(name)]
    if not found:
        exts = ", ".join(sorted(IMAGE_EXTENSIONS if modality == "image" else AUDIO_EXTENSIONS))
        raise ValueError(f"no {modality} files under {root} (looked for {exts})")
    return found
