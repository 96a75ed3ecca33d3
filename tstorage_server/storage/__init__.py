"""Record stores behind one contract (``base.Storage``): ``memory`` and ``sqlite``, one module each."""
