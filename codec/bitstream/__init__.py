"""The bitstream layer: the ``.vqc`` container (``container``), bit packing (``packing``), range coding with the
integer prior (``integer_coding``, format version 5) and with the float prior of older files (``range_coding``),
and ``compress`` / ``decompress``, the one place that joins codec, prior, coder and format.

``container`` and ``packing`` import no torch, so ``codec info`` starts fast. A new coding mode goes here: a module
beside ``packing.py`` / ``range_coding.py``, its name in ``container.MODES`` with its payload bound, and its branch
in ``compress._write`` / ``decompress._decompress`` (and docs/format.md).
"""
