"""A pickle reader that runs no code: only numpy arrays and plain containers (CIFAR-10's batches); the
checkpoint reader extends it to EDM's persistence records."""
from __future__ import annotations

import pickle

import numpy as np

__all__ = ["ArrayUnpickler"]


class ArrayUnpickler(pickle.Unpickler):
    """Accepts only what the CIFAR-10 batches contain: dicts, lists, bytes and numpy arrays. No code runs."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR-10 batch file")
        if (module, name) == ("_codecs", "encode"):
            import codecs
            return codecs.encode
        import numpy._core.multiarray as multiarray
        import numpy._core.numeric as numeric
        if name == "_reconstruct":
            return multiarray._reconstruct
        if name == "scalar":
            return multiarray.scalar
        if name == "_frombuffer":
            return numeric._frombuffer
        return getattr(np, name)
