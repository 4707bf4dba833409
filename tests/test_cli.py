"""Tests of the ``spatial-clap`` command line and the recipe's evaluate.py."""
import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from tiny_model import REPO, SR, stereo

from spatial_clap_sb.cli import evaluate_main, find_audio_files, main
from spatial_clap_sb.data.pipelines import scene_dataset
from spatial_clap_sb.evaluation import SceneEmbeddings, evaluate_manifest, scene_metrics
from spatial_clap_sb.language import (
    N_PHRASINGS,
    compose_caption,
    permuted_captions,
)
from spatial_clap_sb.plots import plot_confusion_matrix, plot_similarity_matrix

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
METRIC_KEYS = ["t2a_R@1", "t2a_R@5", "t2a_R@10", "a2t_R@1", "a2t_R@5", "a2t_R@10",
               "mAP@10", "assignment_acc", "direction_acc", "direction_confusion",
               "n_scenes"]

# 2 one-source and 2 two-source scenes: (sources, azimuth delay of each source)
SCENES = {
    "scene_1src_left": [("a dog barks", "left", 6)],
    "scene_1src_right": [("a bell rings", "right", -6)],
    "scene_2src_a": [("a dog barks", "left", 6), ("a car passes", "right", -6)],
    "scene_2src_b": [("a phone rings", "front-left", 3), ("water flows", "front", 0)],
}


@pytest.fixture(scope="session")
def audio_tree(tmp_path_factory):
    """A folder tree of stereo files (wav and flac, one nested) plus a non-audio file."""
    root = tmp_path_factory.mktemp("tree")
    (root / "sub" / "deeper").mkdir(parents=True)
    paths = {
        "b": root / "b_right.wav", "a": root / "a_left.wav",
        "c": root / "sub" / "c_long.flac", "d": root / "sub" / "deeper" / "d.WAV",
    }
    for (key, path), (seconds, delay) in zip(sorted(paths.items()),
                                             [(1.0, 6), (0.5, -6), (2.5, 3), (1.0, 0)]):
        sf.write(str(path), stereo(seconds, delay=delay, seed=ord(key)), SR)
    (root / "notes.txt").write_text("not audio")
    return root


@pytest.fixture(scope="session")
def scene_manifest(tmp_path_factory):
    """A manifest with a {data_root} placeholder over 4 scene wavs."""
    data_root = tmp_path_factory.mktemp("scenes_root")
    (data_root / "scenes").mkdir()
    manifest = {}
    for i, (scene_id, sources) in enumerate(SCENES.items()):
        wav = sum(stereo(1.0, delay=d, seed=100 + 10 * i + j)
                  for j, (_, _, d) in enumerate(sources))
        sf.write(str(data_root / "scenes" / f"{scene_id}.wav"), 0.5 * wav, SR)
        entries = [{"caption": c, "zone": z} for c, z, _ in sources]
        captions = [compose_caption(entries, p) for p in range(N_PHRASINGS)]
        manifest[scene_id] = {
            "wav": "{data_root}/scenes/" + scene_id + ".wav", "duration": 1.0,
            "caption": captions[0], "captions": captions,
            "n_sources": len(sources), "sources": entries,
        }
    path = data_root / "manifests" / "test.json"
    path.parent.mkdir()
    path.write_text(json.dumps(manifest, indent=2))
    return str(path), str(data_root)


def _error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no error message"
    assert not any("Traceback" in line for line in err)
    return err[-1]


# ---------------------------------------------------------------------------- embed


def test_find_audio_files_is_recursive_and_sorted(audio_tree):
    found = find_audio_files([str(audio_tree)])
    assert [os.path.basename(p) for p in found] == ["a_left.wav", "b_right.wav",
                                                    "c_long.flac", "d.WAV"]
    assert found == sorted(found)
    # a file named twice (directly and through its folder) is embedded once
    assert find_audio_files([str(audio_tree / "a_left.wav"), str(audio_tree)]) == found


def test_embed_writes_npy_and_csv(model_dir, model, audio_tree, tmp_path, capsys):
    prefix = str(tmp_path / "out" / "emb")
    assert main(["embed", "--model", model_dir, str(audio_tree), "--output", prefix,
                 "--batch_size", "2"]) == 0
    assert "Wrote 4 embeddings" in capsys.readouterr().out
    embeddings = np.load(prefix + ".npy")
    with open(prefix + ".csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert embeddings.shape == (4, model.encode_text(["x"]).shape[1])
    assert embeddings.dtype == np.float32
    assert [int(r["index"]) for r in rows] == [0, 1, 2, 3]
    paths = [r["path"] for r in rows]
    assert paths == find_audio_files([str(audio_tree)])
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(embeddings, model.encode_files(paths).numpy(), atol=1e-5)


def test_embed_in_bf16(model_dir, model, files, tmp_path):
    prefix = str(tmp_path / "emb")
    paths = [files["left"], files["right"]]
    assert main(["embed", "--model", model_dir, *paths, "--output", prefix,
                 "--precision", "bf16"]) == 0
    embeddings = torch.from_numpy(np.load(prefix + ".npy"))
    full = model.encode_files(paths)
    assert not torch.equal(embeddings, full)
    assert torch.nn.functional.cosine_similarity(embeddings, full).min() > 0.999


def test_embed_mono_file_fails_with_one_line(model_dir, files, tmp_path):
    """The installed console script: non-zero exit, a clear line, no traceback."""
    script = shutil.which("spatial-clap")
    command = [script] if script else [sys.executable, "-m", "spatial_clap_sb.cli"]
    result = subprocess.run(
        command + ["embed", "--model", model_dir, files["mono"], "--output",
                   str(tmp_path / "emb")],
        capture_output=True, text=True, timeout=120, cwd=REPO,
        env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("spatial-clap: error:")
    assert files["mono"] in last and "two channels" in last and "--allow_mono" in last
    assert not os.path.exists(tmp_path / "emb.npy")


def test_embed_mono_file_with_allow_mono(model_dir, files, tmp_path):
    prefix = str(tmp_path / "mono")
    with pytest.warns(UserWarning, match="meaningless"):
        assert main(["embed", "--model", model_dir, "--allow_mono", files["mono"],
                     "--output", prefix]) == 0
    assert np.load(prefix + ".npy").shape[0] == 1


@pytest.mark.parametrize("key", ["missing", "corrupt", "empty", "three"])
def test_embed_bad_file_fails_with_one_line(model_dir, files, tmp_path, capsys, key):
    code = main(["embed", "--model", model_dir, files["left"], files[key],
                 "--output", str(tmp_path / "emb")])
    assert code == 1
    line = _error_line(capsys)
    assert files[key] in line or "does_not_exist" in line


def test_bad_model_folder(files, tmp_path, capsys):
    assert main(["embed", "--model", str(tmp_path / "nope"), files["left"]]) == 1
    assert "Model folder not found" in _error_line(capsys)
    assert main(["embed", "--model", str(tmp_path), files["left"]]) == 1
    assert "hyperparams.yaml" in _error_line(capsys)


def test_folder_without_audio(model_dir, tmp_path, capsys):
    (tmp_path / "empty_folder").mkdir()
    assert main(["embed", "--model", model_dir, str(tmp_path / "empty_folder")]) == 1
    assert "No .wav or .flac file" in _error_line(capsys)


# ---------------------------------------------------------------------------- search


def _parse_results(out):
    rows = [line.split("\t") for line in out.strip().splitlines()]
    return [(int(r), float(s), p) for r, s, p in rows]


def test_search_prints_best_files(model_dir, model, audio_tree, tmp_path, capsys):
    query = "a dog barks on the left"
    assert main(["search", "--model", model_dir, "--text", query, str(audio_tree),
                 "--top", "3"]) == 0
    results = _parse_results(capsys.readouterr().out)
    paths = find_audio_files([str(audio_tree)])
    expected = model.retrieve(query, model.encode_files(paths), k=3)
    assert [r for r, _, _ in results] == [1, 2, 3]
    assert [p for _, _, p in results] == [paths[i] for i, _ in expected]
    assert [s for _, s, _ in results] == pytest.approx([s for _, s in expected],
                                                       abs=1e-4)

    # the same search over the embeddings written by `embed`
    prefix = str(tmp_path / "emb")
    assert main(["embed", "--model", model_dir, str(audio_tree), "--output", prefix]) == 0
    capsys.readouterr()
    assert main(["search", "--model", model_dir, "--text", query, "--embeddings",
                 prefix, "--top", "3"]) == 0
    again = _parse_results(capsys.readouterr().out)
    assert [p for _, _, p in again] == [p for _, _, p in results]


def test_search_needs_files_or_embeddings(model_dir, audio_tree, capsys):
    assert main(["search", "--model", model_dir, "--text", "a dog"]) == 1
    assert "either" in _error_line(capsys)
    assert main(["search", "--model", model_dir, "--text", "a dog", "--top", "0",
                 str(audio_tree)]) == 1
    assert "--top" in _error_line(capsys)


# ---------------------------------------------------------------------------- evaluate


def test_evaluate_writes_metrics_and_plots(model_dir, model, scene_manifest, tmp_path,
                                           capsys):
    manifest, data_root = scene_manifest
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", model_dir, "--manifest", manifest,
                 "--data_root", data_root, "--output", str(out)]) == 0
    assert "metrics.json" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert sorted(metrics) == sorted(METRIC_KEYS)
    assert metrics["n_scenes"] == 4
    for key in METRIC_KEYS[:9]:
        assert 0.0 <= metrics[key] <= 1.0, key
    confusion = np.array(metrics["direction_confusion"])
    assert confusion.shape == (5, 5) and confusion.sum() == 2
    for name in ("similarity_matrix.png", "direction_confusion.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC

    # the same numbers as scene_metrics on the embeddings of encode_files
    with open(manifest) as f:
        entries = json.load(f)
    scenes = SceneEmbeddings()
    wavs = [e["wav"].replace("{data_root}", data_root) for e in entries.values()]
    batch = type("Batch", (), dict(
        id=list(entries),
        captions=[e["captions"] for e in entries.values()],
        permuted=[permuted_captions(e["sources"]) for e in entries.values()],
        zone_index=[model.zones.index(e["sources"][0]["zone"]) if e["n_sources"] == 1
                    else -1 for e in entries.values()],
        n_sources=[e["n_sources"] for e in entries.values()]))
    scenes.append(batch, model.encode_files(wavs))
    expected = scene_metrics(scenes, model.encode_text, zones=model.zones)
    assert metrics["direction_confusion"] == expected["direction_confusion"]
    for key in METRIC_KEYS:
        if key != "direction_confusion":
            assert metrics[key] == pytest.approx(expected[key], abs=1e-6), key


def test_recipe_evaluate_script(model_dir, scene_manifest, tmp_path):
    manifest, data_root = scene_manifest
    out = tmp_path / "eval"
    assert evaluate_main(["--model", model_dir, "--manifest", manifest, "--data_root",
                          data_root, "--output", str(out), "--batch_size", "3"]) == 0
    assert (out / "metrics.json").is_file()
    assert (out / "similarity_matrix.png").read_bytes()[:8] == PNG_MAGIC
    script = os.path.join(REPO, "recipes", "SpatialCLAP", "evaluate.py")
    with open(script, encoding="utf-8") as f:
        assert len(f.read().splitlines()) < 40  # thin: the logic is in the package


def test_evaluate_without_one_source_scenes_has_no_confusion_plot(model, scene_manifest,
                                                                   tmp_path):
    manifest, data_root = scene_manifest
    with open(manifest) as f:
        entries = {k: v for k, v in json.load(f).items() if v["n_sources"] == 2}
    two_source = tmp_path / "two.json"
    two_source.write_text(json.dumps(entries))
    metrics = evaluate_manifest(model, str(two_source), data_root=data_root,
                                output_dir=str(tmp_path / "eval"))
    assert "direction_acc" not in metrics and "assignment_acc" in metrics
    assert (tmp_path / "eval" / "similarity_matrix.png").is_file()
    assert not (tmp_path / "eval" / "direction_confusion.png").exists()


def test_evaluate_reports_the_direction_probe_of_the_recipe(model_dir, model,
                                                            scene_manifest, tmp_path,
                                                            capsys):
    """--probe_manifest fits the recipe's linear direction probe on one manifest's
    one-source scenes and scores the evaluated manifest's; without one-source scenes
    to fit on it is a one-line error."""
    from spatial_clap_sb.evaluation import direction_probe, embed_scenes

    manifest, data_root = scene_manifest
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", model_dir, "--manifest", manifest, "--data_root",
                 data_root, "--output", str(out), "--probe_manifest", manifest]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    dataset = scene_dataset(manifest, data_root, model.sample_rate,
                            zones=model.zones.to_config())
    scenes = embed_scenes(model, dataset)
    assert metrics["direction_probe_acc"] == pytest.approx(
        direction_probe(scenes, scenes, len(model.zones)), abs=1e-9)

    with open(manifest) as f:
        entries = {k: v for k, v in json.load(f).items() if v["n_sources"] == 2}
    two_source = tmp_path / "two.json"
    two_source.write_text(json.dumps(entries))
    capsys.readouterr()
    assert main(["evaluate", "--model", model_dir, "--manifest", manifest, "--data_root",
                 data_root, "--output", str(out), "--probe_manifest",
                 str(two_source)]) == 1
    assert "one-source scenes" in _error_line(capsys)


def test_evaluate_errors(model_dir, scene_manifest, tmp_path, capsys):
    manifest, data_root = scene_manifest
    assert main(["evaluate", "--model", model_dir, "--manifest",
                 str(tmp_path / "none.json"), "--output", str(tmp_path / "e")]) == 1
    assert "Manifest not found" in _error_line(capsys)
    # wrong data root: the missing scene file is named
    assert main(["evaluate", "--model", model_dir, "--manifest", manifest,
                 "--data_root", str(tmp_path / "elsewhere"),
                 "--output", str(tmp_path / "e")]) == 1
    line = _error_line(capsys)
    assert "not found" in line and "elsewhere" in line


# ---------------------------------------------------------------------------- plots


def test_plots_write_png(tmp_path):
    sim = plot_similarity_matrix(torch.rand(3, 4), ["a", "b", "c"],
                                 ["w", "x" * 200, "y", "z"], str(tmp_path / "s.png"),
                                 "title")
    conf = plot_confusion_matrix(np.array([[2, 0], [1, 0]]), ["left", "right"],
                                 str(tmp_path / "sub" / "c.png"))
    for path in (sim, conf):
        with open(path, "rb") as f:
            assert f.read(8) == PNG_MAGIC
    with pytest.raises(ValueError):
        plot_similarity_matrix(np.zeros((2, 2)), ["a"], ["b", "c"], str(tmp_path / "x.png"),
                               "t")
    with pytest.raises(ValueError):
        plot_confusion_matrix(np.zeros((2, 2)), ["a", "b", "c"], str(tmp_path / "y.png"))
