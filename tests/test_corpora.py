"""Captioned corpora in the layouts they ship (AudioCaps, Clotho): official splits,
several captions per clip, no class labels, and the rule that keeps a scene's clips
different sounds.

The corpora are tiny: their audio is synthesised by the test (eight sound classes of
the built-in library), their caption files are written by the test with every caption
of a clip's class and no label column. The recipe runs on each as a user runs it:
prepare, two training steps, evaluation, export, then the exported model is loaded.
"""
import csv
import itertools
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from spatial_clap_sb.data.mixer import MixingRule
from spatial_clap_sb.data.sources import (
    OFFICIAL_SPLIT_FILES,
    SourceClip,
    SourceCSVError,
    read_official_splits,
)
from spatial_clap_sb.data.synthesis import generate_library
from spatial_clap_sb.language import ZoneVocabulary
from spatial_clap_sb.objective import SpatialCLAPObjective

RECIPE = os.path.join(os.path.dirname(__file__), "..", "recipes", "SpatialCLAP")
CLASSES = ["bell", "rain", "engine", "siren", "birds", "clock", "drum", "typing"]
CLIPS_PER_SPLIT = {"train": 3, "valid": 1, "test": 1}
RECIPE_OPTIONS = [
    "--scene_counts={train: {1: 8, 2: 8}, valid: {1: 4, 2: 4}, test_1src: {1: 6}, "
    "test_2src: {2: 6}, test_3src: {3: 4}}",
    "--train_scene_counts={1: 8, 2: 8}",  # two steps of 8 scenes
    "--batch_size=8", "--number_of_epochs=1", "--warmup_steps=1",
    "--spatialiser={sample_rate: 16000, n_rooms: 1, positions_per_zone: 2, max_order: 2}",
]


def library_clips(root):
    """Five clips of each class, synthesised, with all of their class's captions."""
    clips = generate_library(root / "library", n_clips_per_class=5, classes=CLASSES,
                             seed=3)
    by_class = {}
    for clip in clips:
        by_class.setdefault(clip.label, []).append(clip)
    return by_class


def split_of(index):
    """Clip k of a class goes to train (k < 3), valid (k = 3) or test (k = 4)."""
    bounds = list(itertools.accumulate(CLIPS_PER_SPLIT.values()))
    return next(split for split, bound in zip(CLIPS_PER_SPLIT, bounds) if index < bound)


def write_rows(path, header, rows):
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def write_audiocaps(root):
    """AudioCaps layout: train.csv / val.csv / test.csv, one row per caption, audio
    named {youtube_id}_{start_time}.wav in one folder."""
    corpus, audio = root / "audiocaps", root / "audiocaps_audio"
    corpus.mkdir()
    audio.mkdir()
    rows = {split: [] for split in CLIPS_PER_SPLIT}
    expected = {split: set() for split in CLIPS_PER_SPLIT}
    for label, clips in library_clips(root).items():
        for index, clip in enumerate(clips):
            youtube_id = f"yt{label}{index}"
            shutil.copy(clip.path, audio / f"{youtube_id}_30.wav")
            split = split_of(index)
            expected[split].add(youtube_id)
            rows[split] += [[len(rows[split]), youtube_id, 30, caption]
                            for caption in clip.captions]
    files = {split: name for split, (name, _) in OFFICIAL_SPLIT_FILES["audiocaps"].items()}
    for split, split_rows in rows.items():
        write_rows(corpus / files[split], ["audiocap_id", "youtube_id", "start_time",
                                           "caption"], split_rows)
    return corpus, audio, expected


def write_clotho(root):
    """Clotho layout: clotho_captions_{development,validation,evaluation}.csv with five
    caption columns, audio in development/, validation/ and evaluation/."""
    corpus, audio = root / "clotho", root / "clotho_audio"
    corpus.mkdir()
    layout = OFFICIAL_SPLIT_FILES["clotho"]
    rows = {split: [] for split in CLIPS_PER_SPLIT}
    expected = {split: set() for split in CLIPS_PER_SPLIT}
    for label, clips in library_clips(root).items():
        for index, clip in enumerate(clips):
            split = split_of(index)
            folder = audio / layout[split][1]
            folder.mkdir(parents=True, exist_ok=True)
            name = f"{label} take {index}.wav"
            shutil.copy(clip.path, folder / name)
            expected[split].add(name)
            captions = list(itertools.islice(itertools.cycle(clip.captions), 5))
            rows[split].append([name, *captions])
    for split, split_rows in rows.items():
        write_rows(corpus / layout[split][0],
                   ["file_name"] + [f"caption_{i}" for i in range(1, 6)], split_rows)
    return corpus, audio, expected


CORPORA = {"audiocaps": write_audiocaps, "clotho": write_clotho}


def clip_name(path, source_format):
    stem = os.path.basename(path)
    return stem[:-len("_30.wav")] if source_format == "audiocaps" else stem


@pytest.fixture(scope="module", params=sorted(CORPORA))
def corpus_run(request, tmp_path_factory):
    """The recipe on a tiny corpus in its own layout; returns what the test needs."""
    source_format = request.param
    root = tmp_path_factory.mktemp(source_format)
    corpus, audio, expected = CORPORA[source_format](root)
    out = root / "out"
    command = [sys.executable, "train.py", "hparams/spatial_clap.yaml",
               f"--source_format={source_format}", f"--source_csv={corpus}",
               f"--audio_dir={audio}", f"--data_folder={root / 'data'}",
               f"--output_folder={out}", *RECIPE_OPTIONS]
    result = subprocess.run(command, cwd=RECIPE, capture_output=True, text=True,
                            timeout=900, env=dict(os.environ, HF_HUB_OFFLINE="1",
                                                  OMP_NUM_THREADS="1"))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return dict(format=source_format, data=root / "data", out=out, output=output,
                expected=expected)


def test_official_splits_are_kept(corpus_run):
    data = corpus_run["data"]
    for split, names in corpus_run["expected"].items():
        with open(data / "splits" / f"{split}.csv", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        assert {clip_name(row["path"], corpus_run["format"]) for row in rows} == names


def test_every_caption_of_a_clip_is_kept(corpus_run):
    data = corpus_run["data"]
    with open(data / "splits" / "train.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    per_clip = {}
    for row in rows:
        per_clip.setdefault(row["path"], set()).add(row["caption"])
    assert min(len(captions) for captions in per_clip.values()) >= 2


def test_no_scene_mixes_two_clips_of_the_same_sound(corpus_run):
    """Unlabelled clips of one class share their captions: never in one scene."""
    mixed = 0
    for manifest in ("train", "valid", "test_2src", "test_3src"):
        with open(corpus_run["data"] / "manifests" / f"{manifest}.json") as f:
            scenes = json.load(f).values()
        for scene in scenes:
            classes = [next(c for c in CLASSES if c in source["clip_id"])
                       for source in scene["sources"]]
            assert len(set(classes)) == len(classes), scene["sources"]
            mixed += len(classes) > 1
    assert mixed >= 14  # every scene of two or three sources was checked


def test_a_label_free_corpus_builds_no_source_zone_head(corpus_run):
    assert "source-zone term is off" in corpus_run["output"]
    assert list((corpus_run["out"] / "save").glob("CKPT*"))
    assert not list((corpus_run["out"] / "save").glob("CKPT*/objective.ckpt"))


def test_the_exported_model_loads_and_embeds(corpus_run, tmp_path):
    from spatial_clap_sb.inference import SpatialCLAP

    metrics = json.loads((corpus_run["out"] / "test_metrics.json").read_text())
    assert {"test_1src", "test_2src", "test_3src"} <= set(metrics)
    model = SpatialCLAP.from_hparams(source=str(corpus_run["out"] / "model"),
                                     savedir=str(tmp_path))
    audio = model.encode_signals(torch.randn(2, 16000, 2) * 0.1)
    text = model.encode_text(["a dog barks on the left", "rain on a tin roof"])
    assert audio.shape == text.shape == (2, 512)
    assert torch.isfinite(audio).all() and torch.isfinite(text).all()


def test_a_clip_in_two_official_splits_is_refused(tmp_path):
    corpus, audio, _ = write_audiocaps(tmp_path)
    with open(corpus / "val.csv", encoding="utf-8") as f:
        stolen = list(csv.reader(f))[1]
    with open(corpus / "train.csv", "a", encoding="utf-8", newline="") as f:
        csv.writer(f).writerow(stolen)
    with pytest.raises(SourceCSVError, match="one split"):
        read_official_splits("audiocaps", corpus, audio)


def test_a_corpus_folder_without_its_caption_files_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="clotho_captions_evaluation.csv"):
        read_official_splits("clotho", tmp_path, tmp_path)


def clip(name, captions, label=None, tags=()):
    return SourceClip(name, f"/{name}.wav", captions, label, tags)


def test_mixing_rule_by_label_tag_caption_and_caption_similarity():
    dog = clip("a", ("a dog barks",), tags=("Dog", "Bark"))
    assert not MixingRule().may_mix(clip("b", ("a puppy yelps",), tags=("Dog",)), [dog])
    assert MixingRule().may_mix(clip("c", ("rain falls",), tags=("Rain",)), [dog])
    assert not MixingRule().may_mix(clip("d", ("x",), "bell"), [clip("e", ("y",), "bell")])
    assert not MixingRule().may_mix(clip("f", ("a dog barks",)), [dog])  # same caption
    vectors = {"g": np.array([1.0, 0.0]), "h": np.array([0.8, 0.6]),
               "i": np.array([0.0, 1.0])}
    rule = MixingRule(vectors, max_caption_similarity=0.6)
    g, h, i = clip("g", ("g",)), clip("h", ("h",)), clip("i", ("i",))
    assert not rule.may_mix(h, [g])  # cosine 0.8
    assert rule.may_mix(i, [g])      # cosine 0.0
    assert MixingRule(vectors, max_caption_similarity=0.9).may_mix(h, [g])


def test_paraphrased_captions_never_share_a_scene(tmp_path):
    """Label-free clips whose captions say the same thing in other words are kept
    apart by the frozen sentence encoder (max_caption_similarity)."""
    from spatial_clap_sb.data.prepare import prepare_spatial_scenes

    captions = {"birds": ["birds chirp in the trees", "birds are chirping and singing"],
                "bell": ["a bell rings", "a church bell is ringing"],
                "rain": ["rain falls on a roof", "heavy rain pours down on a roof"]}
    library = generate_library(tmp_path / "lib", n_clips_per_class=4,
                               classes=sorted(captions), seed=1)
    rows = []
    for source in library:
        k = int(source.path[-7:-4])
        rows.append([source.path, captions[source.label][k % 2]])
    write_rows(tmp_path / "clips.csv", ["path", "caption"], rows)
    manifests = prepare_spatial_scenes(
        tmp_path / "data", source_csv=tmp_path / "clips.csv", split_fractions=(1, 0, 0),
        scene_counts={"train": {2: 40}}, heldout_language=False, seed=0,
        spatialiser={"n_rooms": 1, "positions_per_zone": 1, "max_order": 1},
        max_caption_similarity=0.6)
    class_of = {text: label for label, texts in captions.items() for text in texts}
    with open(manifests["train"]) as f:
        scenes = list(json.load(f).values())
    for scene in scenes:
        classes = [class_of[source["caption"]] for source in scene["sources"]]
        assert len(set(classes)) == 2, scene["sources"]


def test_the_source_zone_head_reads_tags_and_is_off_without_classes():
    zones = ZoneVocabulary.default()
    tagged = SpatialCLAPObjective(zones, source_zone_weight=1.0)
    head = tagged.add_source_zone_head({"/m/dog", "/m/bark", "/m/rain"}, 512)
    assert sum(p.numel() for p in head.parameters()) == 3 * 5 * 513
    rows, classes, _ = head.targets([[{"tags": ["/m/dog", "/m/bark"], "zone": "left"}]])
    assert rows.tolist() == [0, 0] and len(set(classes.tolist())) == 2
    label_free = SpatialCLAPObjective(zones, source_zone_weight=1.0)
    assert label_free.add_source_zone_head(set(), 512) is None
    assert not label_free.is_on("source_zone")
    with pytest.raises(ValueError, match="source_zone_weight=0"):
        SpatialCLAPObjective(zones, source_zone_weight=1.0).add_source_zone_head(
            {f"clip{i}" for i in range(50_000)}, 512)
