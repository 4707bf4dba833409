"""Mono source clips with captions: one interface over every place they come from.

A :class:`SourceClip` is a mono audio file with one or more captions and, where known,
a class label. The scene mixer only ever sees lists of them, whichever of these built
them:

* :func:`~spatial_clap_sb.data.synthesis.generate_library` synthesises the built-in
  library (:mod:`spatial_clap_sb.data.synthesis`), so the whole pipeline runs with no
  download;
* :func:`read_clips_csv` reads a user's CSV (``path,caption[,label]``), which is also
  the format the built-in library is written in;
* :func:`read_audiocaps_csv` and :func:`read_clotho_csv` read the published caption
  files of AudioCaps and Clotho.

:func:`split_clips` splits clips (never captions) into train/valid/test, and
:func:`load_clip` loads one as mono audio.
"""

import csv
import hashlib
import os
import re
import warnings
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

import numpy as np

from spatial_clap_sb.data.audio_io import load_mono

__all__ = [
    "SourceClip",
    "SourceCSVError",
    "normalize_caption",
    "clip_ids",
    "open_csv",
    "read_csv_rows",
    "csv_location",
    "read_clips_csv",
    "read_audiocaps_csv",
    "read_clotho_csv",
    "read_audioset_tags",
    "read_official_splits",
    "OFFICIAL_SPLIT_FILES",
    "parse_tags",
    "split_clips",
    "load_clip",
]

AUDIO_EXTENSIONS = (".wav", ".flac")

class SourceCSVError(ValueError):
    """A caption CSV file is malformed (names the file and the 1-based data row)."""


@dataclass(frozen=True)
class SourceClip:
    """A mono audio clip with its captions.

    Arguments
    ---------
    clip_id : str
        Unique, filesystem-safe identifier.
    path : str
        Absolute path to the audio file.
    captions : tuple of str
        One or more non-empty captions ("a bell chimes").
    label : str or None
        Class label where known (scenes never mix two sources of one label).
    tags : tuple of str
        Sound-event tags where known, e.g. the AudioSet labels of an AudioCaps clip
        (scenes never mix two clips that share a tag; the source-zone objective reads
        them as classes).

    Example
    -------
    >>> clip = SourceClip("bell_000", "/data/bell_000.wav", ("a bell chimes",), "bell")
    >>> clip.captions[0]
    'a bell chimes'
    """

    clip_id: str
    path: str
    captions: tuple
    label: Optional[str] = None
    tags: tuple = ()

    def __post_init__(self):
        for key in ("captions", "tags"):
            value = getattr(self, key)
            object.__setattr__(self, key, (value,) if isinstance(value, str) else tuple(value))


# ---------------------------------------------------------------------------------
# Captions and identifiers
# ---------------------------------------------------------------------------------


def normalize_caption(text):
    """Normalises a caption: trims and collapses whitespace, drops a trailing period,
    lowercases the first letter.

    Arguments
    ---------
    text : str
        Raw caption.

    Returns
    -------
    str
        The normalised caption ("" when nothing is left).

    Example
    -------
    >>> normalize_caption("  A dog barks loudly. ")
    'a dog barks loudly'
    """
    text = " ".join(str(text).split())
    while text.endswith("."):
        text = text[:-1].rstrip()
    if text:
        text = text[0].lower() + text[1:]
    return text


def _safe_id(text):
    """Turns a file stem into a filesystem-safe identifier."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._-")
    return safe or "clip"


def clip_ids(paths):
    """Gives each absolute path a unique, filesystem-safe id (its file stem where the
    stem is unique, the stem plus a short hash of the path where stems collide)."""
    stems = [_safe_id(os.path.splitext(os.path.basename(p))[0]) for p in paths]
    counts = {}
    for stem in stems:
        counts[stem] = counts.get(stem, 0) + 1
    ids = []
    for stem, path in zip(stems, paths):
        if counts[stem] > 1:
            digest = hashlib.sha1(path.encode("utf-8")).hexdigest()[:8]
            stem = f"{stem}_{digest}"
        ids.append(stem)
    return ids


# ---------------------------------------------------------------------------------
# CSV readers
# ---------------------------------------------------------------------------------


def open_csv(csv_path):
    csv_path = os.path.abspath(os.fspath(csv_path))
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(f"Caption CSV file not found: {csv_path}")
    return csv_path


def read_csv_rows(csv_path, required):
    """Reads a CSV with a header; checks the required columns are present.

    Returns ``(fieldnames, [(row_number, line_number, row_dict), ...])`` with
    1-based data-row numbers, stripped keys and values, and blank rows dropped."""
    with open(csv_path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise SourceCSVError(
                f"{csv_path}: the file is empty; expected a header with columns "
                f"{', '.join(required)}"
            ) from None
        header = [h.strip() for h in header]
        missing = [c for c in required if c not in header]
        if missing:
            raise SourceCSVError(
                f"{csv_path}, header (line 1): missing required column(s) "
                f"{', '.join(missing)}; the header has {', '.join(repr(h) for h in header)}"
            )
        rows = []
        row_number = 0
        for values in reader:
            if not any(v.strip() for v in values):
                continue
            row_number += 1
            values = [v.strip() for v in values] + [""] * (len(header) - len(values))
            rows.append((row_number, reader.line_num, dict(zip(header, values))))
    return header, rows


def csv_location(csv_path, row_number, line_number):
    return f"{csv_path}, row {row_number} (line {line_number})"


def _merge(entries, tags=None):
    """Merges ``(path, caption, label, where)`` entries into SourceClips by path.

    ``tags`` maps a path to its sound-event tags (several rows of one path may each
    bring some; they are pooled)."""
    tags = tags or {}
    order = []
    by_path = {}
    for path, caption, label, where in entries:
        if path not in by_path:
            by_path[path] = {"captions": [], "label": label, "where": where}
            order.append(path)
        item = by_path[path]
        if label is not None:
            if item["label"] is None:
                item["label"] = label
            elif item["label"] != label:
                raise SourceCSVError(
                    f"{where}: label {label!r} contradicts label {item['label']!r} given "
                    f"for the same file at {item['where']}"
                )
        if caption not in item["captions"]:
            item["captions"].append(caption)
    ids = clip_ids(order)
    return [
        SourceClip(cid, path, tuple(by_path[path]["captions"]), by_path[path]["label"],
                   tuple(sorted(tags.get(path, ()))))
        for cid, path in zip(ids, order)
    ]


def parse_tags(text):
    """Tags written in one CSV cell, separated by ``;`` (or ``,``).

    Example
    -------
    >>> parse_tags("Dog; Bark;;")
    ('Bark', 'Dog')
    """
    return tuple(sorted({t.strip() for t in re.split(r"[;,]", text or "") if t.strip()}))


def read_clips_csv(csv_path, audio_root=None):
    """Reads a CSV of mono clips and their captions.

    The header holds ``path`` and ``caption`` and, optionally, ``label`` and ``tags``
    (sound-event tags separated by ``;``; other columns are ignored). Relative paths resolve against ``audio_root``, or the CSV's
    folder when it is not given. Several rows with one path give one clip with several
    captions. Captions are normalised (see :func:`normalize_caption`).

    Arguments
    ---------
    csv_path : str or os.PathLike
        The CSV file (UTF-8).
    audio_root : str or os.PathLike, optional
        Folder that relative paths are relative to.

    Returns
    -------
    list of SourceClip
        In the order of each path's first row.

    Raises
    ------
    FileNotFoundError
        If the CSV or an audio file it names is missing (names the file and the row).
    SourceCSVError
        For missing columns, an empty path or caption, or contradicting labels for one
        file (names the CSV file and the 1-based data row).

    Example
    -------
    >>> import tempfile
    >>> from spatial_clap_sb.data.synthesis import generate_library
    >>> folder = tempfile.mkdtemp()
    >>> _ = generate_library(folder, 1, classes=["bell"])
    >>> clips = read_clips_csv(os.path.join(folder, "library.csv"))
    >>> clips[0].captions[0]
    'a high bell rings'
    """
    csv_path = open_csv(csv_path)
    root = os.path.dirname(csv_path) if audio_root is None else os.fspath(audio_root)
    root = os.path.abspath(os.path.expanduser(root))
    header, rows = read_csv_rows(csv_path, ("path", "caption"))
    has_label = "label" in header
    entries, tags = [], {}
    for row_number, line_number, row in rows:
        where = csv_location(csv_path, row_number, line_number)
        if not row["path"]:
            raise SourceCSVError(f"{where}: empty path")
        caption = normalize_caption(row["caption"])
        if not caption:
            raise SourceCSVError(f"{where}: empty caption for {row['path']}")
        path = os.path.normpath(os.path.join(root, os.path.expanduser(row["path"])))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Audio file not found: {path} (named at {where})")
        label = (row.get("label") or "") if has_label else ""
        entries.append((path, caption, label or None, where))
        tags.setdefault(path, set()).update(parse_tags(row.get("tags")))
    return _merge(entries, tags)


def _find_audio(audio_dir, stems):
    for stem in stems:
        for ext in AUDIO_EXTENSIONS:
            path = os.path.join(audio_dir, stem + ext)
            if os.path.isfile(path):
                return path
    return None


def _start_variants(start_time):
    variants = [start_time]
    try:
        value = float(start_time)
    except ValueError:
        return variants
    if value == int(value):
        variants.append(str(int(value)))
    variants.append(f"{value:.1f}")
    variants.append(f"{value:.3f}")
    return list(dict.fromkeys(variants))


def read_audiocaps_csv(csv_path, audio_dir, tags=None):
    """Reads an AudioCaps caption file (``audiocap_id,youtube_id,start_time,caption``).

    Each row's audio is looked up in ``audio_dir`` as ``{youtube_id}_{start_time}``,
    ``Y{youtube_id}``, ``{youtube_id}`` or ``{audiocap_id}`` with extension ``.wav`` or
    ``.flac``. AudioCaps downloads are always partial, so rows without audio are
    skipped with one warning giving their count. Rows of one YouTube clip merge into one
    clip with several captions. Labels are None.

    Arguments
    ---------
    csv_path : str or os.PathLike
        AudioCaps ``train.csv``/``val.csv``/``test.csv``.
    audio_dir : str or os.PathLike
        Folder holding the downloaded audio.
    tags : dict, optional
        ``youtube_id -> tags`` (the clip's AudioSet labels, see
        :func:`read_audioset_tags`).

    Returns
    -------
    list of SourceClip

    Raises
    ------
    FileNotFoundError
        If the CSV or ``audio_dir`` is missing, or no row's audio is found.
    SourceCSVError
        For missing columns or an empty caption or youtube_id (names file and row).

    Warns
    -----
    UserWarning
        Once, with the number of rows skipped for missing audio.
    """
    csv_path = open_csv(csv_path)
    audio_dir = os.path.abspath(os.fspath(audio_dir))
    if not os.path.isdir(audio_dir):
        raise FileNotFoundError(f"AudioCaps audio folder not found: {audio_dir}")
    _, rows = read_csv_rows(csv_path, ("audiocap_id", "youtube_id", "start_time", "caption"))
    entries = []
    key_path = {}
    path_tags = {}
    missing = 0
    for row_number, line_number, row in rows:
        where = csv_location(csv_path, row_number, line_number)
        yid = row["youtube_id"]
        if not yid:
            raise SourceCSVError(f"{where}: empty youtube_id")
        caption = normalize_caption(row["caption"])
        if not caption:
            raise SourceCSVError(f"{where}: empty caption for youtube_id {yid}")
        key = (yid, row["start_time"])
        path = key_path.get(key)
        if path is None:
            stems = [f"{yid}_{s}" for s in _start_variants(row["start_time"])]
            stems += [f"Y{yid}", yid]
            if row["audiocap_id"]:
                stems.append(row["audiocap_id"])
            path = _find_audio(audio_dir, stems)
            if path is None:
                missing += 1
                continue
            key_path[key] = path
        entries.append((path, caption, None, where))
        path_tags[path] = (tags or {}).get(yid, ())
    if missing:
        warnings.warn(
            f"{csv_path}: skipped {missing} of {len(rows)} rows whose audio is not in "
            f"{audio_dir} (AudioCaps downloads are usually partial)",
            stacklevel=2,
        )
    if not entries and rows:
        raise FileNotFoundError(
            f"{csv_path}: none of the {len(rows)} rows has its audio in {audio_dir} "
            "(looked for {youtube_id}_{start_time}, Y{youtube_id}, {youtube_id} and "
            "{audiocap_id} with .wav/.flac)"
        )
    return _merge(entries, path_tags)


def read_clotho_csv(csv_path, audio_dir):
    """Reads a Clotho caption file (``file_name,caption_1,...,caption_5``).

    Arguments
    ---------
    csv_path : str or os.PathLike
        E.g. ``clotho_captions_development.csv``.
    audio_dir : str or os.PathLike
        Folder holding the audio files named in ``file_name``.

    Returns
    -------
    list of SourceClip
        One clip per file with its five captions; labels are None.

    Raises
    ------
    FileNotFoundError
        If the CSV or an audio file is missing (names the file and the row).
    SourceCSVError
        For missing columns, an empty file name or an empty caption (names the CSV,
        the row and the column).
    """
    csv_path = open_csv(csv_path)
    audio_dir = os.path.abspath(os.fspath(audio_dir))
    columns = ("file_name",) + tuple(f"caption_{i}" for i in range(1, 6))
    _, rows = read_csv_rows(csv_path, columns)
    entries = []
    for row_number, line_number, row in rows:
        where = csv_location(csv_path, row_number, line_number)
        if not row["file_name"]:
            raise SourceCSVError(f"{where}: empty file_name")
        path = os.path.normpath(os.path.join(audio_dir, row["file_name"]))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Audio file not found: {path} (named at {where})")
        for column in columns[1:]:
            caption = normalize_caption(row[column])
            if not caption:
                raise SourceCSVError(f"{where}: empty {column} for {row['file_name']}")
            entries.append((path, caption, None, where))
    return _merge(entries)


def read_audioset_tags(paths):
    """Reads AudioSet segment lists (``YTID, start_seconds, end_seconds,
    positive_labels``, e.g. ``balanced_train_segments.csv``) into tags per clip.

    AudioCaps clips are AudioSet clips: these tags let the mixer keep two clips that
    share an AudioSet label out of one scene, as the paper does.

    Arguments
    ---------
    paths : str or list of str
        One or more segment CSV files (``#`` lines are comments).

    Returns
    -------
    dict
        ``youtube_id -> tuple of label ids`` (e.g. ``("/m/0bt9lr", "/m/05tny_")``).

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "segments.csv")
    >>> with open(path, "w") as f:
    ...     _ = f.write('# YTID, start_seconds, end_seconds, positive_labels\\n'
    ...                 '--0PQM4-hqg, 30.000, 40.000, "/m/0bt9lr,/m/05tny_"\\n')
    >>> read_audioset_tags(path)
    {'--0PQM4-hqg': ('/m/05tny_', '/m/0bt9lr')}
    """
    tags = {}
    for path in [paths] if isinstance(paths, (str, os.PathLike)) else paths:
        path = open_csv(path)
        with open(path, encoding="utf-8", newline="") as f:
            for line_number, values in enumerate(csv.reader(f, skipinitialspace=True), 1):
                if not values or values[0].lstrip().startswith("#"):
                    continue
                if len(values) < 4:
                    raise SourceCSVError(
                        f"{path}, line {line_number}: expected YTID, start_seconds, "
                        f"end_seconds, positive_labels; got {values}")
                tags[values[0].strip()] = parse_tags(values[3])
    return tags


# The caption files each corpus ships, per split, and the audio folder of each split
# (used when audio_dir has it; otherwise audio_dir holds every split's audio).
OFFICIAL_SPLIT_FILES = {
    "audiocaps": {"train": ("train.csv", "train"), "valid": ("val.csv", "val"),
                  "test": ("test.csv", "test")},
    "clotho": {"train": ("clotho_captions_development.csv", "development"),
               "valid": ("clotho_captions_validation.csv", "validation"),
               "test": ("clotho_captions_evaluation.csv", "evaluation")},
}


def read_official_splits(source_format, corpus_dir, audio_dir, tags=None):
    """Reads a captioned corpus in the layout it ships, keeping its official splits.

    AudioCaps: ``corpus_dir`` holds ``train.csv``, ``val.csv`` and ``test.csv``;
    Clotho: ``clotho_captions_development.csv``, ``clotho_captions_validation.csv`` and
    ``clotho_captions_evaluation.csv`` (:data:`OFFICIAL_SPLIT_FILES`). Each split's
    audio is in ``audio_dir/<split folder>`` (``train``/``val``/``test``;
    ``development``/``validation``/``evaluation``) where that folder exists, else in
    ``audio_dir``. Every clip keeps all its captions; a clip stays in its split.

    Arguments
    ---------
    source_format : str
        ``"audiocaps"`` or ``"clotho"``.
    corpus_dir : str or os.PathLike
        The folder of the corpus's caption files.
    audio_dir : str or os.PathLike
        The audio folder.
    tags : dict, optional
        AudioCaps only: ``youtube_id -> tags`` (:func:`read_audioset_tags`).

    Returns
    -------
    dict
        ``{"train": [...], "valid": [...], "test": [...]}`` of SourceClip.

    Raises
    ------
    FileNotFoundError
        For a missing caption file (names the files the layout needs).
    SourceCSVError
        When one clip id appears in two splits.
    """
    if source_format not in OFFICIAL_SPLIT_FILES:
        raise ValueError(f"Official splits exist for {sorted(OFFICIAL_SPLIT_FILES)}, "
                         f"not {source_format!r}.")
    layout = OFFICIAL_SPLIT_FILES[source_format]
    corpus_dir = os.path.abspath(os.fspath(corpus_dir))
    missing = [name for name, _ in layout.values()
               if not os.path.isfile(os.path.join(corpus_dir, name))]
    if missing:
        raise FileNotFoundError(
            f"{corpus_dir} is not a {source_format} folder: missing {', '.join(missing)} "
            f"(its official splits are {', '.join(name for name, _ in layout.values())}).")
    splits, seen = {}, {}
    for split, (name, folder) in layout.items():
        split_audio = os.path.join(os.fspath(audio_dir), folder)
        if not os.path.isdir(split_audio):
            split_audio = audio_dir
        csv_path = os.path.join(corpus_dir, name)
        if source_format == "audiocaps":
            clips = read_audiocaps_csv(csv_path, split_audio, tags)
        else:
            clips = read_clotho_csv(csv_path, split_audio)
        for clip in clips:
            if clip.clip_id in seen:
                raise SourceCSVError(
                    f"Clip {clip.clip_id} is in both the {seen[clip.clip_id]} and the "
                    f"{split} split of {corpus_dir}: a clip must stay in one split.")
            seen[clip.clip_id] = split
        splits[split] = sorted(clips, key=lambda c: c.clip_id)
    return splits


# ---------------------------------------------------------------------------------
# Splits and loading
# ---------------------------------------------------------------------------------

SPLITS = ("train", "valid", "test")


def _split_counts(n, fractions):
    """Integer counts per split (largest remainder), each split with a non-zero
    fraction getting at least one clip when there are enough clips."""
    ideal = np.asarray(fractions, dtype=np.float64) * n
    counts = np.floor(ideal).astype(int)
    order = np.argsort(-(ideal - counts), kind="stable")
    for i in order[: n - counts.sum()]:
        counts[i] += 1
    wanted = [i for i, f in enumerate(fractions) if f > 0]
    if n >= len(wanted):
        for i in wanted:
            if counts[i] == 0:
                donor = int(np.argmax(counts))
                counts[donor] -= 1
                counts[i] += 1
    return counts


SPLIT_BY = ("auto", "clip", "label")


def split_clips(clips, fractions=(0.8, 0.1, 0.1), seed=0, split_by="auto"):
    """Splits clips (not captions) into train, valid and test.

    ``split_by`` says how labels shape the split:

    * ``"auto"``: each label with at least one clip per split is split on its own
      (stratified: the label is heard in every split); clips of rarer labels, and
      unlabelled clips, are pooled and split by clip. A CSV with one clip per label is
      therefore split by clip.
    * ``"clip"``: labels are ignored; clips are split at random.
    * ``"label"``: label-disjoint: each label goes whole to one split, so test scenes
      hold only classes never heard in training (unlabelled clips count as their own
      label).

    The split depends only on the clips' ids, labels and the seed, not on the input
    order.

    Arguments
    ---------
    clips : list of SourceClip
        Clips with unique ``clip_id``.
    fractions : tuple of float
        Fractions of train, valid, test (normalised to sum 1).
    seed : int
        Seed of the shuffle.
    split_by : str
        ``"auto"``, ``"clip"`` or ``"label"``.

    Returns
    -------
    dict
        ``{"train": [...], "valid": [...], "test": [...]}``, each sorted by clip_id.

    Raises
    ------
    ValueError
        For duplicate clip ids, bad fractions or an unknown ``split_by``.

    Example
    -------
    >>> clips = [SourceClip(f"c{i}", f"/a/c{i}.wav", ("a sound",), f"thing{i}")
    ...          for i in range(10)]
    >>> {k: len(v) for k, v in split_clips(clips).items()}
    {'train': 8, 'valid': 1, 'test': 1}
    """
    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.shape != (3,) or (fractions < 0).any() or fractions.sum() <= 0:
        raise ValueError(f"fractions must be three non-negative numbers, got {fractions}")
    if split_by not in SPLIT_BY:
        raise ValueError(f"split_by must be one of {SPLIT_BY}, got {split_by!r}")
    fractions = fractions / fractions.sum()
    clips = sorted(clips, key=lambda c: c.clip_id)
    ids = [c.clip_id for c in clips]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"Duplicate clip ids: {dupes[:10]}")
    if split_by == "label":
        out = _split_labels(clips, fractions, seed)
    else:
        out = {name: [] for name in SPLITS}
        for key, members in _split_groups(clips, fractions, split_by).items():
            for name, part in zip(SPLITS, _shuffled_parts(members, fractions, seed, key)):
                out[name].extend(part)
    return {name: sorted(v, key=lambda c: c.clip_id) for name, v in out.items()}


def _split_groups(clips, fractions, split_by):
    """Groups split on their own: one per label with a clip for every split, and one
    pool (the rarer labels and unlabelled clips) split by clip."""
    pool_key = "\x00unlabelled"
    if split_by == "clip":
        return {pool_key: clips}
    by_label = OrderedDict()
    for clip in clips:
        by_label.setdefault(clip.label, []).append(clip)
    enough = int((fractions > 0).sum())
    groups = OrderedDict()
    for label, members in by_label.items():
        key = pool_key if label is None or len(members) < enough else str(label)
        groups.setdefault(key, []).extend(members)
    return groups


def _shuffled_parts(members, fractions, seed, key):
    """A group's members shuffled (seeded by the group) and cut by the fractions."""
    rng = np.random.default_rng([int(seed), zlib.crc32(key.encode("utf-8"))])
    perm = rng.permutation(len(members))
    bounds = np.concatenate([[0], np.cumsum(_split_counts(len(members), fractions))])
    return [[members[j] for j in perm[bounds[i]: bounds[i + 1]]]
            for i in range(len(SPLITS))]


def _split_labels(clips, fractions, seed):
    """Label-disjoint split: whole labels go to one split each."""
    by_label = OrderedDict()
    for clip in clips:
        key = clip.label if clip.label is not None else "\x00" + clip.clip_id
        by_label.setdefault(key, []).append(clip)
    labels = sorted(by_label)
    parts = _shuffled_parts(labels, fractions, seed, "\x00labels")
    return {name: [c for label in part for c in by_label[label]]
            for name, part in zip(SPLITS, parts)}


def load_clip(clip, sample_rate, context=""):
    """Loads a clip as mono audio.

    Arguments
    ---------
    clip : SourceClip
        The clip.
    sample_rate : int
        Sample rate of the returned audio.
    context : str
        Where the clip came from; appended to error messages (default: its id).

    Returns
    -------
    np.ndarray
        ``float32`` mono audio ``[time]``.

    Raises
    ------
    ValueError
        If the clip has no caption.
    FileNotFoundError, AudioReadError
        See :func:`spatial_clap_sb.data.audio_io.read_audio`.
    """
    context = context or f"clip {clip.clip_id}"
    if not clip.captions or not all(isinstance(c, str) and c for c in clip.captions):
        raise ValueError(
            f"Clip {clip.clip_id} ({clip.path}) has no usable caption ({context})"
        )
    return load_mono(clip.path, sample_rate, context=context)
