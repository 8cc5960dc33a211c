"""Training and evaluation of LVT models on top of :mod:`lvt_core`."""
