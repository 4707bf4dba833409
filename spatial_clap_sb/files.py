"""Atomic file writes: a reader (or a run killed mid-write) never sees half a file.

Every manifest, option file, clip list, array file and metrics file the package writes
goes through here: the text goes to a temporary file in the target's folder (unique per process, so
processes of one run may write the same target at once), which is then renamed over the
target (``os.replace`` is atomic on one file system). Leftover temporaries end in
``.tmp`` (``.tmp.npz`` for arrays).
"""
import json
import os
import uuid

import numpy as np

__all__ = ["atomic_write_text", "atomic_write_json", "atomic_write_npz"]


def atomic_write_text(path, text):
    """Writes ``text`` (UTF-8, newlines as given) to ``path`` atomically.

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "sub", "a.txt")
    >>> atomic_write_text(path, "one\\n")
    >>> open(path).read(), os.listdir(os.path.dirname(path))
    ('one\\n', ['a.txt'])
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}."
                               f"{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_json(path, content):
    """Writes ``content`` as indented ASCII JSON (any locale reads it) atomically.

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "m.json")
    >>> atomic_write_json(path, {"a": "é"})
    >>> json.load(open(path))
    {'a': 'é'}
    """
    atomic_write_text(path, json.dumps(content, indent=2))


def atomic_write_npz(path, **arrays):
    """Writes arrays to an ``.npz`` file atomically (``numpy.savez``).

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "v.npz")
    >>> atomic_write_npz(path, x=np.arange(3))
    >>> np.load(path)["x"].tolist()
    [0, 1, 2]
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}."
                               f"{uuid.uuid4().hex[:8]}.tmp.npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
