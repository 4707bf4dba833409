"""Prepare step: source clips -> spatialised scenes -> SpeechBrain JSON manifests.

``prepare_spatial_scenes`` writes, under ``data_folder``::

    sources/                  the generated clip library (when no CSV is given)
    rir_banks/                cached stereo RIR banks, one per split, keyed by config
    scenes/<manifest>/*.wav   stereo scenes (16-bit PCM, channel 0 left)
    manifests/<manifest>.json train, valid, test_1src, test_2src, test_3src, and
                              test_*_heldout: the test scenes described in held-out
                              language only (see spatial_clap_sb.language)
    splits/<split>.csv        the clips of each split (path,caption,label,tags)
    caption_embeddings.npz    sentence embeddings of the clips that have neither label
                              nor tags (only with max_caption_similarity)
    prepare_options.json      the options of the finished run, and where each split's
                              clip list and RIR bank are (for mixing on the fly)

Before anything is rendered, every clip is checked (readable, long enough, finite, not
silent, captioned; :mod:`spatial_clap_sb.data.checks`) and each split must hold enough
clips of distinct labels for its scenes: a run with bad data stops at once with one
report of every bad file (or, with ``on_bad_data="skip"``, leaves them out).

Clips are split into train/valid/test before any mixing (no test clip is ever heard in
training; see :func:`~spatial_clap_sb.data.sources.split_clips` for how labels shape
the split; AudioCaps and Clotho given as their folder of caption files keep their
official splits) and every split has rooms of its own. A scene's clips are different
sounds (:class:`~spatial_clap_sb.data.mixer.MixingRule`: labels, AudioSet tags, or for
label-free corpora the similarity of their captions). Three-source scenes exist only
in ``test_3src``. Training and validation captions are drawn from the training
language, test captions are the template phrasings, and each ``<test>_heldout``
manifest holds the same scenes with captions in held-out language. A run whose saved
options match is skipped; changed options rebuild; an interrupted run resumes (finished
scene files are kept, manifests are only ever written whole).
"""
import csv
import functools
import io
import json
import logging
import os
import shutil

import numpy as np
from tqdm import tqdm

from spatial_clap_sb.data.audio_io import write_audio
from spatial_clap_sb.data.checks import (
    check_split_capacity,
    clip_problems,
    enforce,
    split_summary,
)
from spatial_clap_sb.data.mixer import MixerConfig, MixingRule, SceneMixer
from spatial_clap_sb.data.pipelines import write_manifest
from spatial_clap_sb.data.sources import (
    OFFICIAL_SPLIT_FILES,
    load_clip,
    read_audiocaps_csv,
    read_audioset_tags,
    read_clips_csv,
    read_clotho_csv,
    read_official_splits,
    split_clips,
)
from spatial_clap_sb.data.spatialiser import (
    RIRBank,
    SpatialiserConfig,
    cached_rir_bank,
    rir_bank_path,
)
from spatial_clap_sb.data.synthesis import generate_library
from spatial_clap_sb.files import atomic_write_json, atomic_write_npz, atomic_write_text
from spatial_clap_sb.language import (
    N_PHRASINGS,
    ZoneVocabulary,
    language_config,
    scene_captions,
)

logger = logging.getLogger(__name__)

DATA_ROOT = "{data_root}"

# Scenes per manifest and number of sources. Sized so that a CPU model learns the
# default data in minutes, and so that test_2src has >= 500 scenes for stable R@k.
DEFAULT_SCENE_COUNTS = {
    "train": {1: 3000, 2: 5000},
    "valid": {1: 200, 2: 300},
    "test_1src": {1: 500},
    "test_2src": {2: 600},
    "test_3src": {3: 500},
}

# Which clip split and which room bank each manifest draws from.
MANIFEST_SPLIT = {"train": "train", "valid": "valid", "test_1src": "test",
                  "test_2src": "test", "test_3src": "test"}
SPLIT_SEED_OFFSET = {"train": 0, "valid": 1, "test": 2}
# The language of each split's captions: test scenes are described by the template
# (and, in <test>_heldout manifests, by held-out language), the others by the
# training language.
SPLIT_LANGUAGE = {"train": "train", "valid": "train", "test": "template"}
HELDOUT_SUFFIX = "_heldout"
# Stored scenes rendered per pass of the mixer (SceneMixer.render_batch).
RENDER_CHUNK = 64

SOURCE_READERS = {"csv": read_clips_csv, "audiocaps": read_audiocaps_csv,
                  "clotho": read_clotho_csv}


def prepare_spatial_scenes(
    data_folder,
    source_csv=None,
    source_format="csv",
    audio_dir=None,
    n_clips_per_class=20,
    scene_counts=None,
    zones=None,
    spatialiser=None,
    mixer=None,
    split_fractions=(0.8, 0.1, 0.1),
    split_by="auto",
    seed=1234,
    heldout_language=True,
    on_bad_data="stop",
    audioset_tags=None,
    max_caption_similarity=None,
):
    """Simulates the multi-source scene dataset and writes its manifests.

    Arguments
    ---------
    data_folder : str
        Where clips, RIR banks, scenes and manifests go.
    source_csv : str, optional
        A CSV of mono source clips (``path,caption[,label][,tags]``, or an AudioCaps or
        Clotho caption file, see ``source_format``), re-split by ``split_fractions``;
        or, for AudioCaps and Clotho, the folder of the corpus's caption files, whose
        official train/valid/test splits are kept
        (:func:`~spatial_clap_sb.data.sources.read_official_splits`). Default: the
        built-in generated library.
    source_format : str
        ``"csv"``, ``"audiocaps"`` or ``"clotho"``.
    audio_dir : str, optional
        Folder of the audio files of an AudioCaps/Clotho CSV (or the root of relative
        paths of a user CSV).
    n_clips_per_class : int
        Clips per class of the generated library.
    scene_counts : dict, optional
        ``{manifest: {n_sources: count}}``; default ``DEFAULT_SCENE_COUNTS``.
    zones : list of dict or ZoneVocabulary, optional
        The zone vocabulary (default five zones).
    spatialiser : dict or SpatialiserConfig, optional
        Room and microphone ranges.
    mixer : dict or MixerConfig, optional
        Scene length and levels.
    split_fractions : tuple of float
        Train/valid/test shares of the clips.
    split_by : str
        ``"auto"`` (labels with a clip for every split stratified, the rest split by
        clip), ``"clip"`` or ``"label"`` (label-disjoint: test classes never heard in
        training); see :func:`~spatial_clap_sb.data.sources.split_clips`.
    seed : int
        Seeds everything: splits, rooms, scenes, captions.
    heldout_language : bool
        Also write ``<test>_heldout`` manifests: the scenes of each test manifest with
        captions and hard negatives in held-out language only.
    on_bad_data : str
        ``"stop"``: a bad clip ends the run before anything is rendered, with a report
        of every bad clip; ``"skip"``: bad clips are left out (and listed in the log).
    audioset_tags : str or list of str, optional
        AudioCaps: AudioSet segment lists (``*_segments.csv``) whose labels become the
        clips' tags: clips sharing one never sound in one scene.
    max_caption_similarity : float, optional
        Clips without label and tags whose captions' sentence embeddings (frozen
        all-MiniLM-L6-v2) lie at this cosine similarity or above never sound in one
        scene. None: only identical captions are kept apart.

    Returns
    -------
    dict
        Manifest name -> path of its JSON file.

    Raises
    ------
    DataCheckError
        Bad clips (with ``on_bad_data="stop"``), or a split with too few clips of
        distinct labels for its scenes; raised before any scene is rendered.
    """
    zones = ZoneVocabulary.from_config(zones)
    spatialiser = _as_config(SpatialiserConfig, spatialiser)
    mixer = _as_config(MixerConfig, mixer)
    if spatialiser.sample_rate != mixer.sample_rate:
        raise ValueError(
            f"spatialiser sample_rate {spatialiser.sample_rate} and mixer sample_rate "
            f"{mixer.sample_rate} differ; set both to the same rate."
        )
    scene_counts = _normalise_counts(scene_counts or DEFAULT_SCENE_COUNTS)
    options = dict(
        source_csv=_abspath(source_csv), source_format=source_format,
        audio_dir=_abspath(audio_dir), n_clips_per_class=n_clips_per_class,
        scene_counts=scene_counts, zones=zones.to_config(),
        spatialiser=spatialiser.to_dict(), mixer=_mixer_dict(mixer),
        split_fractions=list(split_fractions), split_by=split_by, seed=seed,
        heldout_language=bool(heldout_language), on_bad_data=on_bad_data,
        caption_language=language_config(),  # other sentence material: rebuilt
    )
    # Options added later count only when set, so folders prepared before them stay valid.
    if audioset_tags:
        options["audioset_tags"] = [_abspath(p) for p in (
            [audioset_tags] if isinstance(audioset_tags, str) else audioset_tags)]
    if max_caption_similarity is not None:
        options["max_caption_similarity"] = float(max_caption_similarity)
    options = json.loads(json.dumps(options))  # the form it takes on disk
    manifest_paths = {name: os.path.join(data_folder, "manifests", f"{name}.json")
                      for name in manifest_names(scene_counts, heldout_language, zones)}
    done_file = os.path.join(data_folder, "prepare_options.json")
    progress_file = os.path.join(data_folder, "prepare_in_progress.json")
    saved = _saved_options(done_file) or {}
    saved_options = {k: v for k, v in saved.items() if k != "splits"}
    if saved_options == options and "splits" in saved and all(
            map(os.path.exists, manifest_paths.values())):
        logger.info("Scenes in %s are prepared with these options: skipping.", data_folder)
        return manifest_paths
    if options not in (saved_options, _saved_options(progress_file)):
        _remove_outputs(data_folder, done_file)  # made with other options
    os.makedirs(data_folder, exist_ok=True)
    _remove_temporaries(data_folder)  # left by a run killed mid-write
    atomic_write_json(progress_file, options)

    splits = _checked_splits(data_folder, options, mixer.sample_rate, seed)
    _check_splits(splits, scene_counts, options)
    clips = [clip for split_clips_ in splits.values() for clip in split_clips_]
    load = _clip_loader(clips, mixer.sample_rate)
    rule = MixingRule(_caption_embeddings(data_folder, clips, options),
                      options.get("max_caption_similarity"))
    resources = {}
    for split, split_clips_ in splits.items():
        resources[split] = {
            "clips_csv": _write_clip_list(data_folder, split, split_clips_),
            "rir_bank": rir_bank_path(os.path.join(data_folder, "rir_banks"), spatialiser,
                                      zones, seed + SPLIT_SEED_OFFSET[split])}
    for index, (name, counts) in enumerate(scene_counts.items()):
        split = MANIFEST_SPLIT.get(name, name)
        bank = cached_rir_bank(os.path.join(data_folder, "rir_banks"), spatialiser, zones,
                               seed + SPLIT_SEED_OFFSET.get(split, 3))
        scene_mixer = SceneMixer(splits[split], bank, zones, load, mixer, rule)
        language = SPLIT_LANGUAGE.get(split, "train")
        entries = _render_manifest(data_folder, name, index, counts, scene_mixer, seed,
                                   language)
        write_manifest(manifest_paths[name], entries)
        if name + HELDOUT_SUFFIX in manifest_paths:
            write_manifest(manifest_paths[name + HELDOUT_SUFFIX],
                           _heldout_entries(entries, zones, [seed, index]))
    atomic_write_json(done_file, dict(options, splits=resources))
    os.remove(progress_file)
    return manifest_paths


def manifest_names(scene_counts, heldout_language=True, zones=None):
    """The manifests a prepare run writes: one per scene count (a test manifest whose
    counts are all zero is left out), plus a held-out-language twin of each test
    manifest when the vocabulary has held-out wordings for every zone.

    Example
    -------
    >>> manifest_names({"train": {1: 10}, "test_2src": {2: 5}})
    ['train', 'test_2src', 'test_2src_heldout']
    """
    heldout_language = heldout_language and all(
        z.heldout_phrases for z in ZoneVocabulary.from_config(zones).zones)
    names = []
    for name in _normalise_counts(scene_counts):
        names.append(str(name))
        if heldout_language and MANIFEST_SPLIT.get(str(name)) == "test":
            names.append(str(name) + HELDOUT_SUFFIX)
    return names


def _heldout_entries(entries, zones, seed):
    """The entries of a manifest with captions in held-out language (same scenes)."""
    heldout = {}
    for number, (scene_id, entry) in enumerate(entries.items()):
        rng = np.random.default_rng(seed + [number])
        captions, permuted = scene_captions(entry["sources"], rng, zones, "heldout",
                                            N_PHRASINGS)
        heldout[scene_id] = dict(entry, caption=captions[0], captions=captions,
                                 permuted_captions=permuted, language="heldout")
    return heldout


def split_mixer(data_folder, split="train"):
    """A :class:`SceneMixer` over one split's clips and rooms, for mixing on the fly.

    Arguments
    ---------
    data_folder : str
        A folder prepared by :func:`prepare_spatial_scenes`.
    split : str
        ``"train"``, ``"valid"`` or ``"test"``.

    Returns
    -------
    SceneMixer
    """
    done_file = os.path.join(data_folder, "prepare_options.json")
    options = _saved_options(done_file)
    if options is None:
        raise FileNotFoundError(f"{data_folder} is not prepared (no {done_file}); run "
                                "prepare_spatial_scenes first.")
    mixer = _as_config(MixerConfig, options["mixer"])
    clips = read_clips_csv(options["splits"][split]["clips_csv"])
    load = _clip_loader(clips, mixer.sample_rate)
    bank = RIRBank.load(options["splits"][split]["rir_bank"])
    rule = MixingRule(_caption_embeddings(data_folder, clips, options),
                      options.get("max_caption_similarity"))
    return SceneMixer(clips, bank, ZoneVocabulary(options["zones"]), load, mixer, rule)


def _clip_loader(clips, sample_rate):
    """``load(clip_id) -> mono audio``, each clip read from disk once (LRU cache)."""
    by_id = {c.clip_id: c for c in clips}
    return functools.lru_cache(maxsize=4096)(
        lambda clip_id: load_clip(by_id[clip_id], sample_rate))


def _write_clip_list(data_folder, split, clips):
    """Writes a split's clips as a user-format CSV (one row per caption)."""
    path = os.path.join(data_folder, "splits", f"{split}.csv")
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["path", "caption", "label", "tags"])
    for clip in clips:
        for caption in clip.captions:
            writer.writerow([clip.path, caption, clip.label or "", ";".join(clip.tags)])
    atomic_write_text(path, text.getvalue())
    return os.path.abspath(path)


def _render_manifest(data_folder, name, manifest_index, counts, scene_mixer, seed,
                     language):
    """Draws and renders the scenes of one manifest; keeps scene files already written.

    Scenes are rendered :data:`RENDER_CHUNK` at a time (:meth:`SceneMixer.render_batch`),
    in fixed chunks of the manifest's plan, so that a resumed run renders the same
    batches as an uninterrupted one and writes the same bits.
    """
    scene_dir = os.path.join(data_folder, "scenes", name)
    os.makedirs(scene_dir, exist_ok=True)
    plan = [n for n, count in sorted(counts.items()) for _ in range(count)]
    entries, chunk = {}, []
    for scene_index, n_sources in enumerate(tqdm(plan, desc=f"scenes {name}",
                                                 mininterval=5.0)):
        rng = np.random.default_rng([seed, manifest_index, scene_index])
        scene = scene_mixer.draw(rng, n_sources, language)
        scene_id = f"{name}_{scene_index:05d}"
        chunk.append((scene, os.path.join(scene_dir, f"{scene_id}.wav")))
        entries[scene_id] = _manifest_entry(scene, name, scene_id,
                                            scene_mixer.config.scene_duration)
        if len(chunk) == RENDER_CHUNK or scene_index == len(plan) - 1:
            _write_missing_scenes(chunk, scene_mixer)
            chunk = []
    return entries


def _write_missing_scenes(chunk, scene_mixer):
    """Renders a chunk of ``(scene, path)`` in one pass if any file is missing, and
    writes the missing ones (files are written atomically: present = complete)."""
    missing = [not os.path.exists(path) for _, path in chunk]
    if not any(missing):
        return
    audio = scene_mixer.render_batch([scene for scene, _ in chunk])
    for (_, path), signal, write in zip(chunk, audio, missing):
        if write:
            write_audio(path, signal, scene_mixer.config.sample_rate)


def _manifest_entry(scene, name, scene_id, duration):
    sources = [{key: source[key] for key in ("clip_id", "caption", "label", "tags",
                                             "zone", "azimuth", "distance", "level")
                if key in source}
               for source in scene["sources"]]
    return dict(wav=f"{DATA_ROOT}/scenes/{name}/{scene_id}.wav", duration=duration,
                caption=scene["caption"], captions=scene["captions"],
                permuted_captions=scene["permuted_captions"], language=scene["language"],
                n_sources=scene["n_sources"], room=scene["room"], sources=sources)


def _checked_splits(data_folder, options, sample_rate, seed):
    """The train/valid/test clips, every one checked; bad ones stop the run or are
    left out. Official splits of a corpus are kept; other clips are split here."""
    official = _official_splits(options)
    clips = ([clip for part in official.values() for clip in part] if official
             else _source_clips(data_folder, options, sample_rate, seed))
    source = options["source_csv"] or "the generated library"
    bad = enforce(clip_problems(clips, sample_rate), options["on_bad_data"], source,
                  "Fix or remove these rows, or rerun with --on_bad_data=skip to leave "
                  "them out.")
    if official:
        return {split: [clip for clip in part if clip.path not in bad]
                for split, part in official.items()}
    return split_clips([clip for clip in clips if clip.path not in bad],
                       fractions=tuple(options["split_fractions"]), seed=seed,
                       split_by=options["split_by"])


def _official_splits(options):
    """The corpus's own splits when ``source_csv`` is its folder of caption files."""
    source = options["source_csv"]
    if source is None or not os.path.isdir(source):
        return None
    if options["source_format"] not in OFFICIAL_SPLIT_FILES:
        raise ValueError(f"{source} is a folder: give a CSV file, or the folder of an "
                         f"AudioCaps or Clotho corpus with --source_format=audiocaps|clotho.")
    tags = read_audioset_tags(options["audioset_tags"]) if options.get(
        "audioset_tags") else None
    return read_official_splits(options["source_format"], source,
                                options["audio_dir"] or source, tags)


def _caption_embeddings(data_folder, clips, options):
    """Sentence embeddings of the clips without label and tags (for the mixing rule),
    computed once and kept in ``caption_embeddings.npz``; None when the rule is off."""
    if options.get("max_caption_similarity") is None:
        return None
    unnamed = [c for c in clips if c.label is None and not c.tags]
    path = os.path.join(data_folder, "caption_embeddings.npz")
    stored = {}
    if os.path.exists(path):
        with np.load(path) as saved:
            stored = dict(zip(saved["clip_ids"].tolist(), saved["vectors"]))
    missing = [c for c in unnamed if c.clip_id not in stored]
    if missing:
        from spatial_clap_sb.models.text import sentence_embeddings

        logger.info("Embedding the captions of %d clips without label or tags (the "
                    "mixing rule keeps similar captions out of one scene).", len(missing))
        captions = [caption for clip in missing for caption in clip.captions]
        vectors = sentence_embeddings(captions).numpy()
        start = 0
        for clip in missing:
            mean = vectors[start:start + len(clip.captions)].mean(0)
            stored[clip.clip_id] = mean / max(np.linalg.norm(mean), 1e-12)
            start += len(clip.captions)
        ids = sorted(stored)
        atomic_write_npz(path, clip_ids=np.array(ids),
                         vectors=np.stack([stored[i] for i in ids]).astype(np.float32))
    return {c.clip_id: stored[c.clip_id] for c in unnamed}


def _check_splits(splits, scene_counts, options):
    """Refuses splits that cannot fill their scenes, before anything is rendered."""
    needed = {}
    for name, counts in scene_counts.items():
        split = MANIFEST_SPLIT.get(name, name)
        needed[split] = max(needed.get(split, 0), max(counts, default=0))
    logger.info("Clip splits (%s): %s", options["split_by"], split_summary(splits))
    fractions = "/".join(f"{f:g}" for f in options["split_fractions"])
    check_split_capacity(
        splits, needed, options["source_csv"] or "the generated library",
        f"Split {fractions} by {options['split_by']}. Fixes: add clips; give a larger "
        "share to the short split (--split_fractions); --split_by=clip to ignore labels; "
        "or ask for fewer sources there (e.g. --scene_counts=\"{test_3src: {3: 0}}\" "
        "drops the three-source test).")


def _source_clips(data_folder, options, sample_rate, seed):
    if options["source_csv"] is None:
        return generate_library(os.path.join(data_folder, "sources"),
                                n_clips_per_class=options["n_clips_per_class"],
                                sample_rate=sample_rate, seed=seed)
    reader = SOURCE_READERS.get(options["source_format"])
    if reader is None:
        raise ValueError(f"source_format must be one of {sorted(SOURCE_READERS)}, "
                         f"got {options['source_format']!r}.")
    if options["source_format"] == "csv":
        return reader(options["source_csv"], audio_root=options["audio_dir"])
    return reader(options["source_csv"], options["audio_dir"])


def _as_config(cls, value):
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})


def _mixer_dict(mixer):
    return {k: list(v) if isinstance(v, tuple) else v for k, v in mixer.__dict__.items()}


def _normalise_counts(counts):
    """Keys as str names, source counts as int -> int (JSON and YAML both work)."""
    normalised = {}
    for name, per_k in counts.items():
        per_k = {int(k): int(v) for k, v in per_k.items() if int(v) > 0}
        if not per_k and MANIFEST_SPLIT.get(str(name)) == "test":
            continue  # e.g. {test_3src: {3: 0}}: no such test
        normalised[str(name)] = per_k
        if MANIFEST_SPLIT.get(name) != "test" and max(per_k, default=0) > 2:
            logger.warning("Manifest %s has scenes of more than two sources; the paper "
                           "keeps three-source scenes for test_3src only.", name)
    return normalised


def _abspath(path):
    return None if path is None else os.path.abspath(path)


def _saved_options(path):
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _remove_temporaries(data_folder):
    """Removes the temporary files of atomic writes (``*.tmp``, ``*.tmp.npz``) that a
    killed run left behind; the files they were to become are written anew."""
    for root, _, names in os.walk(data_folder):
        for name in names:
            if name.endswith((".tmp", ".tmp.npz")):
                os.remove(os.path.join(root, name))


def _remove_outputs(data_folder, done_file):
    """Removes scenes and manifests of other options (clip library and RIR cache stay)."""
    for sub in ("scenes", "manifests"):
        shutil.rmtree(os.path.join(data_folder, sub), ignore_errors=True)
    if os.path.exists(done_file):
        os.remove(done_file)
