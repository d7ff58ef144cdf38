"""Training, beside the model core: one loop (``loop``) and one checkpoint format (``state``) for every model, the
codec's task (``codec_task``: ``train``), its data (``data``), losses (``losses``) and metrics (``metrics``), and the
settings and the ``--config`` reader (``config``). Imports ``codec.core``, ``codec.media`` and ``codec.store``;
priors plug their own task into the same loop (``prior.train``).

A new loss goes in ``losses.py`` (its weight in ``TrainConfig``, its term in ``CodecLoss``); a new kind of model to
train is a ``loop.TrainTask``.
"""
