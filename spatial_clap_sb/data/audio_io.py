"""Audio reading and writing with errors that name the offending file.

Every audio file the package touches (source clips, simulated scenes, a user's stereo
recordings at inference) goes through these functions, so a bad file fails in one
place with a message that says which file, what is wrong with it and, where the caller
knows it, which row of which CSV it came from.

Arrays are ``float32`` with time first: ``[time]`` for mono, ``[time, channels]``
otherwise (the layout soundfile uses and SpeechBrain's ``PaddedBatch`` expects).
"""

import functools
import math
import os
import uuid
import warnings

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from scipy.signal import firwin

__all__ = [
    "AudioReadError",
    "ChannelCountError",
    "read_audio",
    "read_float32",
    "load_mono",
    "load_stereo",
    "stereo_length",
    "read_stereo_span",
    "write_audio",
]

# The resampler's convolution computes at least this many output samples per block (a
# rate pair with fewer phases per period, such as 48 to 16 kHz with one, groups periods).
MIN_PHASES = 16

# File subtypes that read_float32 reads as integers and scales to [-1, 1), with the
# integer type and the scale libsndfile's own float conversion uses (the results are
# equal to the bit): its per-sample conversion loop takes about ten times as long as
# reading the integers and scaling them with NumPy (2.5 against 0.2 ms for 10 s of
# 44.1 kHz stereo wav).
INTEGER_SUBTYPES = {
    "PCM_S8": (np.int16, 2.0 ** -15),
    "PCM_U8": (np.int16, 2.0 ** -15),
    "PCM_16": (np.int16, 2.0 ** -15),
    "PCM_24": (np.int32, 2.0 ** -31),
    "PCM_32": (np.int32, 2.0 ** -31),
}


class AudioReadError(ValueError):
    """An audio file exists but cannot be used: unreadable, corrupt, empty or not finite."""


class ChannelCountError(ValueError):
    """An audio file has a channel count the caller cannot use."""


def _with_context(message, context):
    """Appends `` (context)`` to an error message when a context is given."""
    return f"{message} ({context})" if context else message


def _check_sample_rate(sample_rate):
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise TypeError(f"sample_rate must be an int, got {sample_rate!r}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    return int(sample_rate)


def resample(data, orig_sr, target_sr):
    """Resamples audio along its first (time) axis with a polyphase filter.

    The filter is SciPy's ``resample_poly`` design (a Kaiser-windowed sinc, 10 zero
    crossings each side at the higher rate), built once per rate pair and applied as
    a strided convolution with torch, one row per output phase (:func:`_polyphase`):
    the output equals ``scipy.signal.resample_poly`` up to float rounding (about
    1e-7) at a few times its speed. A rate pair with few output phases (48 to 16 kHz
    has one) takes several resampler periods per block, one row per output sample of
    the block (at least ``MIN_PHASES`` rows): a convolution with one output row runs
    about five times slower per sample, and the samples are the same to the bit.
    Deterministic (no randomness). The output has ``ceil(len * target_sr / orig_sr)``
    samples.

    Arguments
    ---------
    data : np.ndarray
        Audio, ``[time]`` or ``[time, channels]``.
    orig_sr : int
        Sample rate of ``data``.
    target_sr : int
        Wanted sample rate.

    Returns
    -------
    np.ndarray
        ``float32`` audio at ``target_sr``, same number of dimensions as ``data``.

    Example
    -------
    >>> resample(np.zeros(8000, dtype=np.float32), 8000, 16000).shape
    (16000,)
    >>> from scipy.signal import resample_poly
    >>> x = np.random.default_rng(0).standard_normal((4410, 2)).astype(np.float32)
    >>> bool(np.allclose(resample(x, 44100, 16000),
    ...                  resample_poly(x, 160, 441, axis=0), atol=1e-5))
    True
    """
    orig_sr = _check_sample_rate(orig_sr)
    target_sr = _check_sample_rate(target_sr)
    data = np.ascontiguousarray(data, dtype=np.float32)  # no copy when it already is
    if orig_sr == target_sr:
        return data
    g = math.gcd(orig_sr, target_sr)
    up, down = target_sr // g, orig_sr // g
    n_in = data.shape[0]
    n_out = -(-n_in * up // down)
    if n_in == 0:
        return np.zeros((0,) + data.shape[1:], dtype=np.float32)
    periods = -(-MIN_PHASES // up)  # resampler periods per block
    kernel, first_input, first_output = _polyphase(up, down, periods)
    phases, stride = up * periods, down * periods
    channels = torch.from_numpy(data.reshape(n_in, -1)).T  # a view: F.pad copies
    # Output n = block * phases + phase reads inputs from block * stride + first_input on.
    n_blocks = (first_output + n_out - 1) // phases + 1
    width = kernel.shape[-1]
    padded = F.pad(channels[:, None], (-first_input, max(
        0, (n_blocks - 1) * stride + width - (n_in - first_input))))
    with torch.inference_mode():
        out = F.conv1d(padded, kernel, stride=stride)[..., :n_blocks]  # [C, phases, blocks]
    out = out.permute(2, 1, 0).reshape(-1, len(channels))  # [time, channels], one copy
    out = out[first_output:first_output + n_out].numpy()
    return np.ascontiguousarray(out.reshape((n_out,) + data.shape[1:]))


@functools.lru_cache(maxsize=16)
def _polyphase(up, down, periods=1):
    """``resample_poly``'s filter for ``up / down``, split into one row per output phase
    of ``periods`` resampler periods (``up * periods`` rows; a block of them reads
    ``down * periods`` new input samples).

    Returns
    -------
    kernel : torch.Tensor
        ``[up * periods, 1, width]``: row ``p`` holds the taps that output ``p`` of a
        block applies to ``width`` consecutive input samples.
    first_input : int
        Input index (<= 0) of the first tap of output block 0.
    first_output : int
        Outputs of the filter's full convolution that precede the first kept one
        (its group delay, as ``resample_poly`` removes it).
    """
    half_len = 10 * max(up, down)
    taps = firwin(2 * half_len + 1, 1.0 / max(up, down), window=("kaiser", 5.0))
    taps = taps.astype(np.float32) * np.float32(up)
    pre_pad = down - half_len % down
    taps = np.concatenate([np.zeros(pre_pad, np.float32), taps])
    first_output = (half_len + pre_pad) // down
    # Full output n reads input j through tap n * down - j * up (when in range).
    first_input = -((len(taps) - 1) // up)
    phases = up * periods
    last_input = (phases - 1) * down // up
    offsets = np.arange(first_input, last_input + 1)
    index = np.arange(phases)[:, None] * down - offsets[None, :] * up
    valid = (index >= 0) & (index < len(taps))
    kernel = np.where(valid, taps[np.clip(index, 0, len(taps) - 1)], np.float32(0))
    return torch.from_numpy(kernel[:, None, :].copy()), int(first_input), int(first_output)


def read_audio(path, sample_rate, context=""):
    """Reads an audio file and resamples it to ``sample_rate``.

    Arguments
    ---------
    path : str or os.PathLike
        Audio file (any format soundfile reads: wav, flac, ogg, ...).
    sample_rate : int
        Sample rate of the returned array.
    context : str
        Where the file came from (e.g. ``"row 7 of clips.csv"``); appended to every
        error message.

    Returns
    -------
    data : np.ndarray
        ``float32`` audio, ``[time, channels]`` (always 2-D), at ``sample_rate``.
    original_sr : int
        The file's own sample rate.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    AudioReadError
        If the file is not a readable audio file, holds no samples, or holds no finite
        sample. Non-finite samples in an otherwise finite file are set to zero with a
        warning.

    Example
    -------
    >>> import tempfile, os
    >>> tmp = os.path.join(tempfile.mkdtemp(), "a.wav")
    >>> write_audio(tmp, np.zeros(8000, dtype=np.float32), 8000)
    >>> data, sr = read_audio(tmp, 16000)
    >>> data.shape, sr
    ((16000, 1), 8000)
    """
    sample_rate = _check_sample_rate(sample_rate)
    path = os.fspath(path)
    if not os.path.isfile(path):
        what = "is a folder, not an audio file" if os.path.isdir(path) else "not found"
        raise FileNotFoundError(_with_context(f"Audio file {what}: {path}", context))
    try:
        with sf.SoundFile(path) as f:
            data, original_sr, subtype = read_float32(f), f.samplerate, f.subtype
    except Exception as err:  # soundfile raises several types (LibsndfileError, TypeError)
        raise AudioReadError(
            _with_context(
                f"{path} is not a readable audio file (soundfile: {err})", context
            )
        ) from err
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise AudioReadError(
            _with_context(f"Audio file {path} is empty (it holds no samples)", context)
        )
    if subtype not in INTEGER_SUBTYPES:  # integer samples are finite
        if not np.isfinite(data).any():
            raise AudioReadError(
                _with_context(
                    f"Audio file {path} holds no finite sample (all NaN or inf)", context
                )
            )
        data = _finite(data, path, context)
    data = resample(data, original_sr, sample_rate)
    return np.ascontiguousarray(data, dtype=np.float32), int(original_sr)


def load_mono(path, sample_rate, context=""):
    """Loads an audio file as mono, downmixing (channel mean) multichannel files.

    Arguments
    ---------
    path : str or os.PathLike
        Audio file.
    sample_rate : int
        Sample rate of the returned array.
    context : str
        Where the file came from (e.g. ``"row 7 of clips.csv"``); appended to every
        error and warning message.

    Returns
    -------
    np.ndarray
        ``float32`` mono audio ``[time]`` at ``sample_rate``.

    Raises
    ------
    FileNotFoundError, AudioReadError
        See :func:`read_audio`.

    Warns
    -----
    UserWarning
        When a multichannel file is downmixed (names the file and its channel count).
    """
    data, _ = read_audio(path, sample_rate, context=context)
    if data.shape[1] > 1:
        warnings.warn(
            _with_context(
                f"Audio file {os.fspath(path)} has {data.shape[1]} channels; "
                "downmixing to mono (mean over channels)",
                context,
            ),
            stacklevel=2,
        )
        return np.ascontiguousarray(data.mean(axis=1), dtype=np.float32)
    return np.ascontiguousarray(data[:, 0])


def load_stereo(path, sample_rate, allow_mono=False, context=""):
    """Loads a two-channel audio file (channel 0 = left, channel 1 = right).

    Stereo is never silently flattened or invented: a file with another channel count
    is an error, except that ``allow_mono=True`` lets a mono file through (duplicated
    into both channels, with a warning, since its direction is then meaningless).

    Arguments
    ---------
    path : str or os.PathLike
        Audio file.
    sample_rate : int
        Sample rate of the returned array.
    allow_mono : bool
        Duplicate a mono file into two identical channels instead of raising.
    context : str
        Where the file came from; appended to every error and warning message.

    Returns
    -------
    np.ndarray
        ``float32`` audio ``[time, 2]`` at ``sample_rate``.

    Raises
    ------
    FileNotFoundError, AudioReadError
        See :func:`read_audio`.
    ChannelCountError
        If the file does not have two channels (one is allowed with ``allow_mono``).
    """
    data, _ = read_audio(path, sample_rate, context=context)
    n_channels = data.shape[1]
    path = os.fspath(path)
    if n_channels == 2:
        return data
    if n_channels == 1 and allow_mono:
        warnings.warn(
            _with_context(
                f"Audio file {path} is mono; duplicating it into both channels. "
                "Both channels are identical, so any direction read from it is "
                "meaningless",
                context,
            ),
            stacklevel=2,
        )
        return np.ascontiguousarray(np.repeat(data, 2, axis=1))
    raise _channel_error(path, n_channels, context)


def _channel_error(path, n_channels, context):
    hint = (" (pass allow_mono=True to duplicate a mono file, losing direction)"
            if n_channels == 1 else "")
    return ChannelCountError(_with_context(
        f"Audio file {path} has {n_channels} channel(s), but the model needs two "
        f"channels (stereo: channel 0 = left, channel 1 = right){hint}", context))


def stereo_length(path, sample_rate, allow_mono=False, context=""):
    """Number of samples a stereo file has at ``sample_rate`` (read from its header).

    Raises
    ------
    FileNotFoundError, AudioReadError, ChannelCountError
        As :func:`load_stereo`.
    """
    info = _stereo_info(path, allow_mono, context)
    return math.ceil(info.frames * sample_rate / info.samplerate)


def read_stereo_span(path, sample_rate, start, stop, allow_mono=False, context=""):
    """Samples ``[start, stop)`` (at ``sample_rate``) of a stereo file, reading only
    the part of the file they come from.

    The span equals the same samples of ``load_stereo(path, sample_rate)`` up to float
    rounding: the read starts and ends a filter's length beyond the span, on a sample
    where the polyphase resampler's phase is that of the whole file, and the margins are
    cut off. Memory stays that of the span, whatever the file's length.

    Arguments
    ---------
    path : str
        Audio file.
    sample_rate : int
        Sample rate of ``start``, ``stop`` and the result.
    start, stop : int
        The span, ``0 <= start < stop <= stereo_length(path, sample_rate)``.
    allow_mono : bool
        Duplicate a mono file into both channels.
    context : str
        Appended to error and warning messages.

    Returns
    -------
    np.ndarray
        ``float32`` ``[stop - start, 2]``; non-finite samples set to zero (with a
        warning).

    Example
    -------
    >>> import tempfile
    >>> tmp = os.path.join(tempfile.mkdtemp(), "s.wav")
    >>> write_audio(tmp, np.random.default_rng(0).uniform(-.5, .5, (44100, 2)), 44100)
    >>> whole = load_stereo(tmp, 16000)
    >>> bool(np.allclose(read_stereo_span(tmp, 16000, 5000, 9000), whole[5000:9000],
    ...                  atol=1e-6))
    True
    """
    sample_rate = _check_sample_rate(sample_rate)
    info = _stereo_info(path, allow_mono, context)
    g = math.gcd(info.samplerate, sample_rate)
    up, down = sample_rate // g, info.samplerate // g
    # Input samples the resampling filter reaches (scipy: 10 * max(up, down) taps each
    # side at the upsampled rate), rounded to whole resampler periods of ``down``.
    margin = (math.ceil(10 * max(up, down) / up) // down + 2) * down
    first = max(0, (start * down // up - margin) // down * down)
    last = min(info.frames, -(-(stop * down // up + margin + 1) // down) * down)
    with sf.SoundFile(path) as f:
        f.seek(first)
        data = read_float32(f, last - first)
        if f.subtype not in INTEGER_SUBTYPES:  # integer samples are finite
            data = _finite(data, path, context)
    if data.shape[1] == 1:
        data = np.repeat(data, 2, axis=1)
    data = resample(data, info.samplerate, sample_rate)
    offset = first * up // down  # where ``data`` starts at ``sample_rate``
    return np.ascontiguousarray(data[start - offset: stop - offset])


def read_float32(sound_file, frames=-1):
    """Reads frames of an open :class:`soundfile.SoundFile` as ``float32`` (full scale 1).

    Integer PCM (the subtypes in ``INTEGER_SUBTYPES``) is read as integers and scaled
    with NumPy: the same values as ``sound_file.read(dtype="float32")``, in a tenth of
    the time. Other subtypes (float, compressed, ...) are read by libsndfile as floats.

    Arguments
    ---------
    sound_file : soundfile.SoundFile
        A file open for reading, at the frame to start from.
    frames : int
        Frames to read; ``-1`` reads to the end of the file.

    Returns
    -------
    np.ndarray
        ``float32`` ``[frames, channels]``.

    Example
    -------
    >>> import tempfile
    >>> tmp = os.path.join(tempfile.mkdtemp(), "r.wav")
    >>> write_audio(tmp, np.array([[0.5, -0.25], [0.0, 1.0]]), 16000)
    >>> with sf.SoundFile(tmp) as f:
    ...     read_float32(f).tolist()
    [[0.5, -0.25], [0.0, 0.999969482421875]]
    """
    integer_type, scale = INTEGER_SUBTYPES.get(sound_file.subtype, (None, None))
    if integer_type is None:
        return sound_file.read(frames, dtype="float32", always_2d=True)
    samples = sound_file.read(frames, dtype=integer_type, always_2d=True)
    return np.multiply(samples, np.float32(scale), dtype=np.float32)


def _stereo_info(path, allow_mono, context):
    """soundfile's header info of a file :func:`load_stereo` would accept."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(_with_context(f"Audio file not found: {path}", context))
    try:
        info = sf.info(path)
    except Exception as err:  # soundfile raises several types
        raise AudioReadError(_with_context(
            f"{path} is not a readable audio file (soundfile: {err})", context)) from err
    if info.frames == 0:
        raise AudioReadError(_with_context(
            f"Audio file {path} is empty (it holds no samples)", context))
    if info.channels != 2 and not (info.channels == 1 and allow_mono):
        raise _channel_error(path, info.channels, context)
    return info


def _finite(data, path, context):
    """Sets non-finite samples to zero, with a warning naming the file."""
    finite = np.isfinite(data)
    if finite.all():
        return data
    warnings.warn(_with_context(
        f"Audio file {path}: {int(data.size - finite.sum())} non-finite samples "
        "(NaN/inf) set to zero", context), stacklevel=3)
    return np.where(finite, data, np.float32(0.0))


def write_audio(path, data, sample_rate):
    """Writes audio as a 16-bit PCM wav file, atomically.

    The data go to a temporary file in the destination folder, which then replaces
    ``path`` in one step, so a crash or a concurrent reader never sees half a file.
    Missing parent folders are created. Samples outside [-1, 1] are clipped with a
    warning.

    Arguments
    ---------
    path : str or os.PathLike
        Destination ``.wav`` file.
    data : np.ndarray or torch.Tensor
        Audio, ``[time]`` or ``[time, channels]``.
    sample_rate : int
        Sample rate written in the header.

    Raises
    ------
    ValueError
        If ``data`` is not 1-D or 2-D, or holds non-finite samples.

    Example
    -------
    >>> import tempfile, os
    >>> tmp = os.path.join(tempfile.mkdtemp(), "sub", "b.wav")
    >>> write_audio(tmp, np.zeros((100, 2), dtype=np.float32), 16000)
    >>> sf.info(tmp).channels
    2
    """
    sample_rate = _check_sample_rate(sample_rate)
    path = os.fspath(path)
    if hasattr(data, "detach"):  # torch tensor
        data = data.detach().cpu().numpy()
    data = np.asarray(data, dtype=np.float32)
    if data.ndim not in (1, 2):
        raise ValueError(
            f"Cannot write {path}: audio must be [time] or [time, channels], "
            f"got shape {data.shape}"
        )
    if not np.isfinite(data).all():
        raise ValueError(f"Cannot write {path}: audio holds non-finite samples")
    peak = float(np.abs(data).max()) if data.size else 0.0
    if peak > 1.0:
        warnings.warn(
            f"Writing {path}: peak {peak:.3f} exceeds 1.0; samples are clipped",
            stacklevel=2,
        )
        data = np.clip(data, -1.0, 1.0)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # A unique hidden name in the same folder (so os.replace stays on one file
    # system); created by soundfile, so it gets the usual umask permissions.
    tmp = os.path.join(
        folder, f".{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    )
    try:
        sf.write(tmp, data, sample_rate, subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
