"""The torch/torchaudio requirements and the check that the installed pair loads.

SpeechBrain imports torchaudio, and a torchaudio wheel built for another torch fails
to load its compiled library (``undefined symbol``, or ``libc10_cuda.so`` missing under a
CPU-only torch). Release-line arithmetic does not predict it: torchaudio 2.11.1 loads
under torch 2.14.1 but not under torch 2.11.0. So the requirements below admit only
pairs that were installed and loaded in a fresh environment, and
:func:`check_torchaudio_loads` runs when ``spatial_clap_sb`` is imported, before
anything imports SpeechBrain, so that a broken pair is reported with both versions and
the command that fixes it instead of a traceback from inside torchaudio.

This file imports nothing but the standard library: ``setup.py`` reads
:data:`TORCH_REQUIREMENTS` from it.
"""
import importlib
from importlib import metadata

# Each torch release of the range was installed beside torchaudio 2.11.1 in a fresh
# virtual environment, and torchaudio loaded and resampled (README.md lists the pairs).
TORCH_REQUIREMENTS = ("torch>=2.13,<2.15", "torchaudio==2.11.1")
# The pair CI installs. Exact versions, so that the fix also replaces a torch that
# satisfies the range but not torchaudio (a CPU-only build of torch 2.13.0, say).
TESTED_PAIR = ("torch==2.14.1", "torchaudio==2.11.1")
FIX_COMMAND = "pip install " + " ".join(f'"{r}"' for r in TESTED_PAIR)


def installed_version(package):
    """The installed version of a distribution, or ``None`` when it is not installed.

    Example
    -------
    >>> installed_version("a-package-that-is-not-installed") is None
    True
    """
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _import_torchaudio():
    """Imports torchaudio, which loads its compiled library against the installed torch."""
    importlib.import_module("torchaudio")


def check_torchaudio_loads(load=_import_torchaudio):
    """Raises ImportError unless torch and torchaudio are installed and load together.

    Arguments
    ---------
    load : callable
        Imports torchaudio (the default); it raises when the library does not load.

    Raises
    ------
    ImportError
        Naming the installed torch and torchaudio versions, the loader's own message,
        and the ``pip install`` command that installs a pair that loads.

    Example
    -------
    >>> check_torchaudio_loads()  # the installed pair loads: nothing happens
    >>> def broken():
    ...     raise OSError("libtorchaudio.so: undefined symbol: torch_exception_get_what")
    >>> check_torchaudio_loads(broken)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ImportError: torchaudio ... does not load under torch ...
    """
    torch_version = installed_version("torch")
    torchaudio_version = installed_version("torchaudio")
    if torch_version is None or torchaudio_version is None:
        missing = "torch" if torch_version is None else "torchaudio"
        raise ImportError(f"spatial_clap_sb needs {missing} (SpeechBrain imports "
                          f"torchaudio); install a pair that loads with: {FIX_COMMAND}")
    try:
        load()
    except (OSError, ImportError, RuntimeError) as error:
        cause = error
        while cause.__cause__ is not None:  # the loader's own words ("undefined symbol")
            cause = cause.__cause__
        raise ImportError(
            f"torchaudio {torchaudio_version} does not load under torch {torch_version} "
            f"({type(cause).__name__}: {cause}). SpeechBrain needs it. Install a pair "
            f"that loads with: {FIX_COMMAND}") from None
