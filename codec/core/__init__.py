"""The codec's model core: configs, network layers, image and audio networks, vector quantizers, and ``Codec``.

Imports only ``kernels``, ``codec.errors`` and ``codec.store``. A new codec architecture goes here: its config
fields in ``config.py``, its networks in a module beside ``image_net.py`` / ``audio_net.py``, chosen in
``Codec.__init__`` (``model.py``).
"""
