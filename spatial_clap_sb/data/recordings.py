"""A user's own stereo recordings -> checked, split SpeechBrain manifests.

:func:`recording_manifests` (the command ``spatial-clap manifest``) reads a captions
CSV over a folder of stereo recordings::

    path,caption,zones,source_captions
    kitchen/take1.wav,a kettle whistles on the left,left,a kettle whistles
    hall/take3.wav,a door slams on the right while a dog barks in front,right;front,a door slams;a dog barks

``path`` is relative to the folder; ``caption`` describes the whole scene. The optional
``zones`` (one zone name per source, ``;``-separated, names of the zone vocabulary)
and ``source_captions`` (the sound of each source, same order) give the spatial
metrics their ground truth: one-source recordings count in direction accuracy, and a
caption that is a template phrasing of its sources gets permuted-assignment negatives.
Several rows with one path give one recording with several captions.

Every recording is checked (readable, two channels, sample rate no lower than the
model's, long enough, finite, not silent) and every row (caption, zones), and the run
stops with one report of every problem (or leaves the listed rows out). The recordings
are then split by recording into ``train.json``, ``valid.json`` and ``test.json``, the
manifests that ``train.py hparams/finetune.yaml --manifests=...`` reads.
"""
import logging
import os

import soundfile as sf

from spatial_clap_sb.data.checks import Problem, audio_problem, enforce
from spatial_clap_sb.data.pipelines import write_manifest
from spatial_clap_sb.data.sources import (
    AUDIO_EXTENSIONS,
    SourceClip,
    clip_ids,
    csv_location,
    normalize_caption,
    open_csv,
    read_csv_rows,
    split_clips,
)
from spatial_clap_sb.language import ZoneVocabulary

logger = logging.getLogger(__name__)

ZONE_SEPARATOR = ";"


def recording_manifests(audio_dir, captions_csv, output_dir, sample_rate=16000,
                        split_fractions=(0.8, 0.1, 0.1), seed=1234, min_seconds=0.5,
                        on_bad_data="stop", zones=None):
    """Checks a folder of stereo recordings and writes train/valid/test manifests.

    Arguments
    ---------
    audio_dir : str
        The folder the CSV's paths are relative to.
    captions_csv : str
        ``path,caption`` and optionally ``zones`` and ``source_captions`` (see the
        module docstring).
    output_dir : str
        Where ``train.json``, ``valid.json`` and ``test.json`` go.
    sample_rate : int
        The model's sample rate: recordings at a lower rate are refused.
    split_fractions : tuple of float
        Train/valid/test shares of the recordings.
    seed : int
        Seed of the split.
    min_seconds : float
        Shortest usable recording.
    on_bad_data : str
        ``"stop"`` (default): any problem ends the run with a report of all of them,
        before a manifest is written; ``"skip"``: leave the listed rows out.
    zones : ZoneVocabulary or list of dict, optional
        The zone vocabulary of the ``zones`` column (default: the five default zones).

    Returns
    -------
    dict
        ``{"train": path, "valid": path, "test": path}``.

    Raises
    ------
    DataCheckError
        With ``on_bad_data="stop"``, listing every bad recording or row.

    Example
    -------
    >>> import tempfile, numpy as np
    >>> from spatial_clap_sb.data.audio_io import write_audio
    >>> folder = tempfile.mkdtemp()
    >>> rows = ["path,caption,zones"]
    >>> for i in range(10):
    ...     write_audio(os.path.join(folder, f"r{i}.wav"),
    ...                 np.full((16000, 2), 0.1, dtype=np.float32), 16000)
    ...     rows.append(f"r{i}.wav,a hum on the left,left")
    >>> with open(os.path.join(folder, "captions.csv"), "w") as f:
    ...     _ = f.write("\\n".join(rows))
    >>> paths = recording_manifests(folder, os.path.join(folder, "captions.csv"),
    ...                             os.path.join(folder, "manifests"))
    >>> sorted(paths)
    ['test', 'train', 'valid']
    """
    zones = ZoneVocabulary.from_config(zones)
    captions_csv = open_csv(captions_csv)
    audio_dir = os.path.abspath(audio_dir)
    recordings, problems = read_recordings_csv(captions_csv, audio_dir, zones)
    problems += [Problem(path, reason) for path in recordings
                 for reason in [audio_problem(path, sample_rate, stereo=True,
                                              min_seconds=min_seconds)] if reason]
    bad = enforce(problems, on_bad_data, captions_csv,
                  "Fix or remove these rows, or rerun with --on_bad_data=skip to leave "
                  "them out.")
    _warn_uncaptioned(audio_dir, recordings)
    recordings = {path: r for path, r in recordings.items()
                  if path not in bad and not r["bad_rows"] & bad}
    if not recordings:
        raise ValueError(f"{captions_csv}: no usable recording is left.")
    ids = dict(zip(recordings, clip_ids(list(recordings))))
    splits = split_clips([SourceClip(ids[p], p, tuple(r["captions"]))
                          for p, r in recordings.items()],
                         fractions=tuple(split_fractions), seed=seed, split_by="clip")
    paths = {}
    for split, members in splits.items():
        paths[split] = os.path.join(output_dir, f"{split}.json")
        write_manifest(paths[split], {clip.clip_id: _entry(clip.path,
                                                           recordings[clip.path])
                                      for clip in members})
    logger.info("%d recordings: %s", len(recordings),
                ", ".join(f"{s} {len(m)}" for s, m in splits.items()))
    return paths


def read_recordings_csv(captions_csv, audio_dir, zones):
    """Reads the captions CSV of a folder of recordings.

    Returns
    -------
    recordings : dict
        Absolute path -> ``{"captions", "sources", "bad_rows"}``.
    problems : list of Problem
        Bad rows (``where`` names the CSV row), with the recording's path added to
        ``bad_rows`` of its entry.
    """
    _, rows = read_csv_rows(captions_csv, ("path", "caption"))
    recordings, problems = {}, []
    for row_number, line_number, row in rows:
        where = csv_location(captions_csv, row_number, line_number)
        if not row["path"]:
            problems.append(Problem(where, "empty path"))
            continue
        path = os.path.normpath(os.path.join(audio_dir, row["path"]))
        recording = recordings.setdefault(
            path, {"captions": [], "sources": None, "bad_rows": set()})
        sources, reason = _row_sources(row, zones)
        caption = normalize_caption(row["caption"])
        if not caption:
            reason = "empty caption"
        elif not reason and recording["sources"] not in (None, sources):
            reason = "its zones or source captions differ from an earlier row of the file"
        if reason:
            problems.append(Problem(f"{where} ({row['path']})", reason))
            recording["bad_rows"].add(f"{where} ({row['path']})")
            continue
        recording["sources"] = sources
        if caption not in recording["captions"]:
            recording["captions"].append(caption)
    recordings = {p: r for p, r in recordings.items() if r["captions"] or r["bad_rows"]}
    return recordings, problems


def _row_sources(row, zones):
    """The sources of a row (``[]`` without zones) and a problem, if any."""
    names = _split_list(row.get("zones", ""))
    sounds = _split_list(row.get("source_captions", ""))
    unknown = [name for name in names if name not in zones.names]
    if unknown:
        return None, (f"unknown zone(s) {', '.join(unknown)}; the zones are "
                      f"{', '.join(zones.names)}")
    if sounds and len(sounds) != len(names):
        return None, (f"{len(sounds)} source captions for {len(names)} zones; give one "
                      "per zone, in the same order")
    caption = normalize_caption(row["caption"])
    sounds = [normalize_caption(s) for s in sounds] or [caption] * len(names)
    return [{"caption": s, "zone": z} for s, z in zip(sounds, names)], None


def _split_list(text):
    return [part.strip() for part in (text or "").split(ZONE_SEPARATOR) if part.strip()]


def _entry(path, recording):
    info = sf.info(path)
    return {"wav": path, "duration": info.frames / info.samplerate,
            "caption": recording["captions"][0], "captions": recording["captions"],
            "sources": recording["sources"] or []}


def _warn_uncaptioned(audio_dir, recordings):
    """Logs how many audio files of the folder no row of the CSV names."""
    found = [os.path.join(folder, name) for folder, _, names in os.walk(audio_dir)
             for name in names if name.lower().endswith(AUDIO_EXTENSIONS)]
    uncaptioned = [p for p in found if os.path.normpath(p) not in recordings]
    if uncaptioned:
        logger.warning("%d audio file(s) in %s have no caption in the CSV and are left "
                       "out (e.g. %s).", len(uncaptioned), audio_dir, uncaptioned[0])
