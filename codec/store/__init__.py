"""Storage below every model: run directories (``rundir``), the bundled-name registry (``registry``) and atomic
files (``files``). Model-agnostic: nothing here knows what a codec or a prior computes."""
