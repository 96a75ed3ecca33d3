"""Record stores behind one contract (``base.Storage``): ``memory`` and ``sqlite``."""
