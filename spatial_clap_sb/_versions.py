"""Checks that torch and torchaudio come from one release line.

SpeechBrain imports torchaudio, and a torchaudio wheel built for another torch release
fails to load (or loads and crashes later). The check runs before anything imports
SpeechBrain, so the user sees which versions are installed and the command that fixes it
instead of a missing-symbol traceback.
"""
from importlib import metadata

SUPPORTED_RANGE = ">=2.7.1,<2.12"
FIX_COMMAND = (
    f'pip install "torch{SUPPORTED_RANGE}" "torchaudio{SUPPORTED_RANGE}"'
)


def release_line(version):
    """Returns the (major, minor) release line of a version string.

    Arguments
    ---------
    version : str
        A version such as ``"2.11.0+cpu"``.

    Returns
    -------
    tuple of int
        ``(major, minor)``.

    Example
    -------
    >>> release_line("2.11.0+cpu")
    (2, 11)
    """
    major, minor = version.split("+")[0].split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()))


def check_torch_pair(torch_version=None, torchaudio_version=None):
    """Raises ImportError when torch and torchaudio are from different release lines.

    Arguments
    ---------
    torch_version : str, optional
        Installed torch version (read from the environment when omitted).
    torchaudio_version : str, optional
        Installed torchaudio version (read from the environment when omitted).

    Raises
    ------
    ImportError
        Naming both installed versions and the install command that fixes the pair.
    """
    try:
        torch_version = torch_version or metadata.version("torch")
    except metadata.PackageNotFoundError:
        raise ImportError(
            f"spatial_clap_sb needs torch; install a matching pair with: {FIX_COMMAND}"
        ) from None
    try:
        torchaudio_version = torchaudio_version or metadata.version("torchaudio")
    except metadata.PackageNotFoundError:
        raise ImportError(
            f"spatial_clap_sb needs torchaudio (SpeechBrain imports it) matching "
            f"torch {torch_version}; install a matching pair with: {FIX_COMMAND}"
        ) from None
    if release_line(torch_version) != release_line(torchaudio_version):
        raise ImportError(
            f"torch {torch_version} and torchaudio {torchaudio_version} are from "
            f"different release lines, and torchaudio will not load. Install a "
            f"matching pair with: {FIX_COMMAND}"
        )
