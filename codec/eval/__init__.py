"""Rate-distortion evaluation of a codec against its peers: JPEG and WebP (``image``), Opus and Vorbis (``audio``),
run by ``rd`` (``codec eval``, ``tools/eval_rd.py``). Above the bitstream: it codes real ``.vqc`` files."""
