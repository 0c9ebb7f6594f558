"""Restricted loading of the pickles that datasets ship (``rf.pkl``, ``fitzpatrick_labels.pkl``,
``demo_fold.pkl``, object ``.npy`` files such as ``vital_dict.npy``).

A pickle can name any importable callable and call it while loading (``os.system`` through
``__reduce__``), so dataset pickles are untrusted input. :func:`load_pickle` uses an unpickler that
resolves only the globals these formats need:

* the builtin containers and scalars (``dict``, ``list``, ``tuple``, ``set``, ``frozenset``,
  ``int``, ``float``, ``complex``, ``str``, ``bytes``, ``bytearray``, ``bool``, ``slice``);
* ``_codecs.encode`` (protocol 2 stores ``bytes`` through it);
* the numpy array and scalar reconstruction: ``numpy.ndarray``, ``numpy.dtype``,
  ``numpy[._]core.multiarray._reconstruct`` / ``scalar`` and ``numpy[._]core.numeric._frombuffer``.

Anything else (``os.system``, ``builtins.eval``, ``subprocess.Popen``, any class) is refused
with :class:`UnsafePickleError` naming the file and the global, before anything is called.

:func:`load_npy_object` reads a ``.npy`` file: plain arrays with ``allow_pickle=False``; an object
array's payload (the pickle numpy writes after the header) through the same restricted unpickler.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
from pathlib import Path

import numpy as np

from pipeline.errors import RpmError

_ALLOWED: dict[str, frozenset[str]] = {
    "builtins": frozenset(
        {
            "dict",
            "list",
            "tuple",
            "set",
            "frozenset",
            "int",
            "float",
            "complex",
            "str",
            "bytes",
            "bytearray",
            "bool",
            "slice",
        }
    ),
    "_codecs": frozenset({"encode"}),
    "numpy": frozenset({"ndarray", "dtype"}),
    "numpy.core.multiarray": frozenset({"_reconstruct", "scalar"}),
    "numpy._core.multiarray": frozenset({"_reconstruct", "scalar"}),
    "numpy.core.numeric": frozenset({"_frombuffer"}),
    "numpy._core.numeric": frozenset({"_frombuffer"}),
}


class UnsafePickleError(RpmError, pickle.UnpicklingError, ValueError):
    """A pickle that references a global outside the allow-list; nothing from it was called."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = str(path) if path is not None else "<pickle>"
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def _numpy_dtype_class(module: str, name: str):
    # numpy >= 1.25 pickles dtypes as ``numpy.dtypes.Float64DType`` etc. (only the dtype classes)
    if module == "numpy.dtypes" and name.endswith("DType"):
        import numpy.dtypes

        obj = getattr(numpy.dtypes, name, None)
        if isinstance(obj, type) and issubclass(obj, np.dtype):
            return obj
    return None


class RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str | Path | None = None):
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str):
        # Python 2 names (protocols 0-2 write ``__builtin__.set``), mapped as pickle itself does
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if name in _ALLOWED.get(module, ()):
            return super().find_class(module, name)
        dtype_cls = _numpy_dtype_class(module, name)
        if dtype_cls is not None:
            return dtype_cls
        raise UnsafePickleError(
            self._path,
            f"refused to load: the pickle references {module}.{name}, which is not an allowed "
            "container, number, string or numpy array (untrusted pickles may run code)",
        )

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not supported")


def loads(data: bytes, path: str | Path | None = None):
    """Unpickle ``data`` with the restricted unpickler (``path`` only names the source in errors)."""
    return RestrictedUnpickler(io.BytesIO(data), path).load()


def load_pickle(path: str | Path):
    """Restricted unpickling of the file ``path``; raises :class:`UnsafePickleError` for forbidden globals."""
    with open(path, "rb") as f:
        return RestrictedUnpickler(f, path).load()


def load_npy_object(path: str | Path):
    """Load a ``.npy`` file; an object array's pickled payload goes through the restricted unpickler."""
    path = Path(path)
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" not in str(exc) and "Object arrays" not in str(exc):
            raise
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"{path}: unsupported .npy format version {version}")
        if not dtype.hasobject:
            raise ValueError(f"{path}: unexpected dtype {dtype} after allow_pickle=False failed")
        arr = RestrictedUnpickler(f, path).load()
    if not isinstance(arr, np.ndarray):
        raise UnsafePickleError(path, f"the .npy payload is a {type(arr).__name__}, not an array")
    if arr.shape != tuple(shape):
        raise ValueError(f"{path}: payload shape {arr.shape} differs from the header's {tuple(shape)}")
    return arr
