class BackendUnavailableError(RuntimeError):
    """The requested search backend cannot run here (no Triton, or Triton on CPU without the interpreter)."""
