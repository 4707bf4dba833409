"""Tests of the prepare step (spatial_clap_sb.data.prepare) on a tiny configuration."""

import copy
import dataclasses
import json
import os
import shutil
import time

import numpy as np
import pytest
import soundfile as sf

from spatial_clap_sb import files as files_module
from spatial_clap_sb.data import prepare as prepare_module
from spatial_clap_sb.data.audio_io import write_audio
from spatial_clap_sb.data.prepare import (
    DATA_ROOT,
    manifest_names,
    prepare_spatial_scenes,
)
from spatial_clap_sb.language import (
    ENGLISH,
    N_PHRASINGS,
    ZoneVocabulary,
    compose_caption,
)

SR = 16000
SCENE_COUNTS = {"train": {1: 4, 2: 4}, "valid": {1: 2, 2: 2}, "test_1src": {1: 3},
                "test_2src": {2: 3}, "test_3src": {3: 3}}
OPTIONS = dict(
    n_clips_per_class=3,
    scene_counts=SCENE_COUNTS,
    spatialiser=dict(n_rooms=1, positions_per_zone=2, max_order=2),
    mixer=dict(scene_duration=0.5),
    seed=7,
)
SOURCE_KEYS = {"caption", "label", "azimuth", "zone", "distance", "level"}
ZONES = ZoneVocabulary.default()


def _options(**changes):
    options = copy.deepcopy(OPTIONS)
    options.update(changes)
    return options


def _load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _all_files(folder):
    """Relative path -> mtime (ns) of every file under ``folder`` (hidden ones too)."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            full = os.path.join(root, name)
            out[os.path.relpath(full, folder)] = os.stat(full).st_mtime_ns
    return out


def _tmp_files(folder):
    return [f for f in _all_files(folder) if f.endswith(".tmp") or ".tmp." in f]


def _wav_path(entry, data_folder):
    return entry["wav"].replace(DATA_ROOT, str(data_folder))


def _clip_ids(manifest):
    return {s["clip_id"] for entry in manifest.values() for s in entry["sources"]}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prepared")
    paths = prepare_spatial_scenes(str(folder), **OPTIONS)
    return folder, paths


@pytest.fixture
def prepared_copy(prepared, tmp_path):
    """A private copy of the prepared folder, for tests that change it."""
    folder, _ = prepared
    target = tmp_path / "copy"
    shutil.copytree(folder, target)
    return target


# ---------------------------------------------------------------------------------
# Contents
# ---------------------------------------------------------------------------------


def test_returns_one_manifest_per_name(prepared):
    folder, paths = prepared
    assert set(paths) == set(manifest_names(SCENE_COUNTS))
    for name, path in paths.items():
        assert os.path.normpath(path) == os.path.normpath(
            os.path.join(folder, "manifests", f"{name}.json"))
        assert os.path.isfile(path)
    assert os.path.isfile(folder / "prepare_options.json")
    assert not os.path.exists(folder / "prepare_in_progress.json")
    assert _tmp_files(folder) == []


def test_manifest_schema(prepared):
    folder, paths = prepared
    for name, path in paths.items():
        manifest = _load(path)
        assert len(manifest) == sum(SCENE_COUNTS[_base(name)].values())
        for scene_id, entry in manifest.items():
            assert scene_id.startswith(_base(name))
            assert entry["wav"].startswith(DATA_ROOT + "/")
            assert entry["duration"] == pytest.approx(0.5)
            assert isinstance(entry["caption"], str) and entry["caption"]
            assert isinstance(entry["captions"], list)
            assert len(entry["captions"]) == N_PHRASINGS
            assert entry["caption"] == entry["captions"][0]
            assert isinstance(entry["n_sources"], int)
            assert len(entry["sources"]) == entry["n_sources"]
            for source in entry["sources"]:
                assert isinstance(source, dict)
                assert SOURCE_KEYS <= set(source)
                assert source["zone"] in ZONES.names
                assert ZONES.zone_of(source["azimuth"]).name == source["zone"]
                assert source["distance"] > 0
                assert -6.0 <= source["level"] <= 0.0
            assert max(s["level"] for s in entry["sources"]) == 0.0
            # Distinct zones and labels; captions follow the composition rule.
            assert len({s["zone"] for s in entry["sources"]}) == entry["n_sources"]
            assert len({s["label"] for s in entry["sources"]}) == entry["n_sources"]
            # Test captions are the template; the others are drawn language.
            assert entry["language"] == {"train": "train", "valid": "train"}.get(
                name, "heldout" if name.endswith("_heldout") else "template")
            assert len(entry["permuted_captions"]) == N_PHRASINGS
            for p in range(N_PHRASINGS):
                if entry["language"] == "template":
                    assert entry["captions"][p] == compose_caption(entry["sources"], p)
                for source in entry["sources"]:
                    assert source["caption"] in entry["captions"][p].lower()


def _base(name):
    return name[:-len("_heldout")] if name.endswith("_heldout") else name


def test_wav_files(prepared):
    folder, paths = prepared
    for path in paths.values():
        for entry in _load(path).values():
            wav = _wav_path(entry, folder)
            assert os.path.isfile(wav)
            info = sf.info(wav)
            assert info.channels == 2
            assert info.samplerate == SR
            assert info.frames == int(round(entry["duration"] * SR))
            audio, _ = sf.read(wav, dtype="float32")
            assert np.abs(audio).max() > 1e-3
            assert not np.array_equal(audio[:, 0], audio[:, 1])


def test_source_counts_per_manifest(prepared):
    _, paths = prepared
    for name, path in paths.items():
        counts = {}
        for entry in _load(path).values():
            counts[entry["n_sources"]] = counts.get(entry["n_sources"], 0) + 1
        assert counts == SCENE_COUNTS[_base(name)]
        if name in ("train", "valid"):
            assert set(counts) <= {1, 2}
        if 3 in counts:
            assert _base(name) == "test_3src"


def test_split_by_clip(prepared):
    _, paths = prepared
    train = _clip_ids(_load(paths["train"]))
    valid = _clip_ids(_load(paths["valid"]))
    test = set()
    for name in ("test_1src", "test_2src", "test_3src"):
        test |= _clip_ids(_load(paths[name]))
    assert train and valid and test
    assert not train & test
    assert not train & valid
    assert not valid & test


def test_each_split_has_its_own_rooms(prepared):
    folder, _ = prepared
    banks = [f for f in os.listdir(folder / "rir_banks") if f.endswith(".npz")]
    assert len(banks) == 3  # train, valid, test


def test_mismatched_sample_rates_raise(tmp_path):
    with pytest.raises(ValueError, match="sample_rate"):
        prepare_spatial_scenes(str(tmp_path), **_options(
            spatialiser=dict(n_rooms=1, positions_per_zone=1, max_order=1,
                             sample_rate=8000)))


# ---------------------------------------------------------------------------------
# Skipping, rebuilding, resuming
# ---------------------------------------------------------------------------------


def test_second_call_does_nothing(prepared_copy):
    before = _all_files(prepared_copy)
    start = time.perf_counter()
    paths = prepare_spatial_scenes(str(prepared_copy), **OPTIONS)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0
    assert _all_files(prepared_copy) == before  # nothing written, nothing removed
    assert set(paths) == set(manifest_names(SCENE_COUNTS))


@pytest.mark.parametrize("change", [
    {"mixer": dict(scene_duration=0.5, level_range_db=(-20.0, -10.0))},
    {"seed": 8},
])
def test_changed_options_rebuild(prepared_copy, change):
    folder = prepared_copy
    old = {name: _load(folder / "manifests" / f"{name}.json") for name in SCENE_COUNTS}
    old_audio, _ = sf.read(folder / "scenes" / "train" / "train_00006.wav")
    paths = prepare_spatial_scenes(str(folder), **_options(**change))
    new = {name: _load(path) for name, path in paths.items()}
    assert set(new) == set(manifest_names(SCENE_COUNTS))
    for name in SCENE_COUNTS:
        assert len(new[name]) == len(old[name])
        if "seed" in change or name != "test_1src":
            # (One-source scenes always sit at 0 dB: a level range leaves them as
            # they were.)
            assert new[name] != old[name]
    new_audio, _ = sf.read(folder / "scenes" / "train" / "train_00006.wav")
    assert new_audio.shape == old_audio.shape
    assert not np.array_equal(new_audio, old_audio)
    if "mixer" in change:  # the level range went into the manifests
        levels = [s["level"] for e in new["train"].values() for s in e["sources"]]
        assert min(levels) < -6.0
    saved = _load(folder / "prepare_options.json")
    for key, value in change.items():
        assert json.loads(json.dumps(saved[key])) == json.loads(json.dumps(
            value if key != "mixer" else {**saved["mixer"], **value}))
    assert not os.path.exists(folder / "prepare_in_progress.json")
    assert _tmp_files(folder) == []
    # And the rebuilt folder is then skipped in its turn.
    before = _all_files(folder)
    prepare_spatial_scenes(str(folder), **_options(**change))
    assert _all_files(folder) == before


def test_changed_caption_language_rebuilds(prepared_copy, monkeypatch):
    """The sentence material is part of the saved options: a folder captioned with
    other frames is prepared anew, and its training captions use the new ones."""
    folder = prepared_copy
    frame = "what the microphones picked up: {}"
    only_frame = dataclasses.replace(ENGLISH["train"], frames=(frame,))
    monkeypatch.setitem(ENGLISH, "train", only_frame)
    paths = prepare_spatial_scenes(str(folder), **OPTIONS)
    captions = [c for e in _load(paths["train"]).values() for c in e["captions"]]
    assert captions and all(c.lower().startswith("what the microphones") for c in captions)
    saved = _load(folder / "prepare_options.json")
    assert saved["caption_language"]["train"]["frames"] == [frame]


def test_interrupted_run_resumes(tmp_path, prepared, monkeypatch):
    folder = tmp_path / "interrupted"
    written = []

    def failing_write(path, data, sample_rate):
        if len(written) == 5:
            raise RuntimeError("simulated crash")
        write_audio(path, data, sample_rate)
        written.append(path)

    monkeypatch.setattr(prepare_module, "write_audio", failing_write)
    with pytest.raises(RuntimeError, match="simulated crash"):
        prepare_spatial_scenes(str(folder), **OPTIONS)
    monkeypatch.undo()

    assert not os.path.exists(folder / "prepare_options.json")
    assert os.path.exists(folder / "prepare_in_progress.json")
    assert not os.path.exists(folder / "manifests" / "train.json")  # never half-written
    assert _tmp_files(folder) == []
    kept = {path: os.stat(path).st_mtime_ns for path in written}
    assert len(kept) == 5

    paths = prepare_spatial_scenes(str(folder), **OPTIONS)
    # Finished scene files were kept, not rendered again.
    for path, mtime in kept.items():
        assert os.stat(path).st_mtime_ns == mtime
    assert os.path.exists(folder / "prepare_options.json")
    assert not os.path.exists(folder / "prepare_in_progress.json")
    assert _tmp_files(folder) == []
    # The result is exactly that of an uninterrupted run with the same options.
    _, reference = prepared
    for name, path in paths.items():
        manifest = _load(path)
        assert manifest == _load(reference[name])
        for entry in manifest.values():
            assert os.path.isfile(_wav_path(entry, folder))
    ref_audio, _ = sf.read(str(prepared[0] / "scenes" / "train" / "train_00002.wav"))
    new_audio, _ = sf.read(str(folder / "scenes" / "train" / "train_00002.wav"))
    np.testing.assert_array_equal(new_audio, ref_audio)


def _failing_manifest_write(monkeypatch, prefix):
    """Makes the atomic writer fail halfway through writing a manifest of ``prefix``
    scenes (half of its text reaches the disk, then a disk error)."""
    real_open = open

    class HalfWriting:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, text):
            if text.lstrip().startswith("{") and f'"{prefix}' in text[:40]:
                self.f.write(text[: len(text) // 2])
                raise OSError("simulated disk failure")
            return self.f.write(text)

    def failing_open(path, *args, **kwargs):
        return HalfWriting(real_open(path, *args, **kwargs))

    monkeypatch.setattr(files_module, "open", failing_open, raising=False)


def test_failure_while_writing_a_manifest(tmp_path, monkeypatch):
    folder = tmp_path / "failing"
    _failing_manifest_write(monkeypatch, "valid_")
    with pytest.raises(OSError, match="simulated"):
        prepare_spatial_scenes(str(folder), **OPTIONS)
    monkeypatch.undo()
    manifests = folder / "manifests"
    # train was written before the failure, whole; valid never appears half-written.
    assert len(_load(manifests / "train.json")) == 8
    assert not os.path.exists(manifests / "valid.json")
    assert not os.path.exists(folder / "prepare_options.json")

    paths = prepare_spatial_scenes(str(folder), **OPTIONS)
    for name, path in paths.items():
        assert len(_load(path)) == sum(SCENE_COUNTS[_base(name)].values())
    assert _tmp_files(folder) == []
    assert not os.path.exists(folder / "prepare_in_progress.json")


def test_failed_rewrite_keeps_old_manifest(prepared_copy, monkeypatch):
    folder = prepared_copy
    manifests = folder / "manifests"
    old_train = _load(manifests / "train.json")
    os.remove(manifests / "test_3src.json")  # forces the manifests to be written again
    _failing_manifest_write(monkeypatch, "train_")
    with pytest.raises(OSError, match="simulated"):
        prepare_spatial_scenes(str(folder), **OPTIONS)
    monkeypatch.undo()
    # The old manifest is intact (or gone), never a half-written file.
    if os.path.exists(manifests / "train.json"):
        assert _load(manifests / "train.json") == old_train

    paths = prepare_spatial_scenes(str(folder), **OPTIONS)
    assert _load(paths["train"]) == old_train
    assert len(_load(paths["test_3src"])) == 3
    assert _tmp_files(folder) == []
    assert not os.path.exists(folder / "prepare_in_progress.json")


def test_deleted_manifest_is_restored(prepared_copy, prepared):
    folder = prepared_copy
    os.remove(folder / "manifests" / "test_2src.json")
    paths = prepare_spatial_scenes(str(folder), **OPTIONS)
    _, reference = prepared
    for name, path in paths.items():
        assert _load(path) == _load(reference[name])
    assert _tmp_files(folder) == []


# ---------------------------------------------------------------------------------
# A user's CSV of clips
# ---------------------------------------------------------------------------------


def test_user_csv_end_to_end(tmp_path):
    audio_dir = tmp_path / "clips"
    rng = np.random.default_rng(0)
    labels = {"gong": "a gong resonates", "horn": "a horn honks",
              "saw": "someone saws wood", "kettle": "a kettle whistles"}
    rows = ["path,caption,label"]
    for label, caption in labels.items():
        for k in range(3):
            rel = f"{label}_{k}.wav"  # relative to audio_dir
            noise = 0.2 * rng.standard_normal(int(0.3 * SR)).astype(np.float32)
            write_audio(audio_dir / rel, noise, SR)
            rows.append(f"{rel},{caption} {k},{label}")
    csv_path = tmp_path / "clips.csv"
    csv_path.write_text("\n".join(rows) + "\n", encoding="utf-8")

    folder = tmp_path / "data"
    counts = {"train": {1: 2, 2: 2}, "valid": {2: 1}, "test_2src": {2: 2},
              "test_3src": {3: 2}}
    paths = prepare_spatial_scenes(
        str(folder), source_csv=str(csv_path), audio_dir=str(audio_dir),
        scene_counts=counts,
        spatialiser=dict(n_rooms=1, positions_per_zone=1, max_order=1),
        mixer=dict(scene_duration=0.5), seed=3)
    assert set(paths) == set(manifest_names(counts))
    assert not os.path.exists(folder / "sources")  # no generated library
    captions = {f"{c} {k}" for c in labels.values() for k in range(3)}
    train_ids = _clip_ids(_load(paths["train"]))
    for name, path in paths.items():
        manifest = _load(path)
        assert len(manifest) == sum(counts[_base(name)].values())
        for entry in manifest.values():
            for source in entry["sources"]:
                assert source["label"] in labels
                assert source["caption"] in captions
            if entry["language"] == "template":
                assert entry["captions"][0] == compose_caption(entry["sources"])
            info = sf.info(_wav_path(entry, folder))
            assert (info.channels, info.samplerate, info.frames) == (2, SR, 8000)
        if name.startswith("test"):
            assert not _clip_ids(manifest) & train_ids
    three = _load(paths["test_3src"])
    assert all(e["n_sources"] == 3 for e in three.values())
    # Skipped on a second call.
    before = _all_files(folder)
    prepare_spatial_scenes(
        str(folder), source_csv=str(csv_path), audio_dir=str(audio_dir),
        scene_counts=counts,
        spatialiser=dict(n_rooms=1, positions_per_zone=1, max_order=1),
        mixer=dict(scene_duration=0.5), seed=3)
    assert _all_files(folder) == before
