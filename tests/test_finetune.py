"""Fine-tuning an exported model on a user's own clips (classes it never heard).

A small "default" model is trained on some generated classes and exported; the user's
clips are other classes, given as a CSV. Fine-tuning with hparams/finetune.yaml must
raise the user's test_2src t2a_R@1 above the unadapted model's on the same test set.
"""
import json
import os
import subprocess
import sys

import pytest

from spatial_clap_sb.data.sources import GENERATED_CLASSES, generate_library
from spatial_clap_sb.evaluate_model import evaluate_manifest
from spatial_clap_sb.inference import SpatialCLAP

RECIPE = os.path.join(os.path.dirname(__file__), "..", "recipes", "SpatialCLAP")
CLASSES = list(GENERATED_CLASSES)
COMMON = [
    "--spatialiser={sample_rate: 16000, n_rooms: 2, positions_per_zone: 2, max_order: 2}",
    "--batch_size=16", "--warmup_steps=1", "--text_trainable_layers=0",
    "--text_adapter_layers=0",
]


def write_csv(clips, path):
    with open(path, "w", encoding="utf-8") as f:
        f.write("path,caption,label\n")
        for clip in clips:
            for caption in clip.captions:
                f.write(f"{clip.path},{caption},{clip.label}\n")
    return str(path)


def train(hparams_file, tmp_path, name, *extra, data_folder=None):
    command = [sys.executable, "train.py", hparams_file,
               f"--data_folder={data_folder or tmp_path / name / 'data'}",
               f"--output_folder={tmp_path / name / 'out'}", *COMMON, *extra]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run(command, cwd=RECIPE, capture_output=True, text=True,
                            timeout=900, env=env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return tmp_path / name / "out"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("finetune")
    seen = generate_library(tmp_path / "seen", n_clips_per_class=5,
                            classes=CLASSES[:6], seed=1)
    unseen = generate_library(tmp_path / "unseen", n_clips_per_class=10,
                              classes=CLASSES[12:18], seed=2)
    counts = ("--scene_counts={train: {1: 16, 2: 16}, valid: {1: 8, 2: 8}, "
              "test_1src: {1: 8}, test_2src: {2: 40}, test_3src: {3: 8}}")
    default = train("hparams/spatial_clap.yaml", tmp_path, "default",
                    f"--source_csv={write_csv(seen, tmp_path / 'seen.csv')}", counts,
                    "--train_scene_counts={1: 32, 2: 32}", "--number_of_epochs=2")
    finetuned = train("hparams/finetune.yaml", tmp_path, "finetune",
                      f"--pretrained_model={default / 'model'}",
                      f"--sources_csv={write_csv(unseen, tmp_path / 'unseen.csv')}", counts,
                      "--train_scene_counts={1: 96, 2: 160}", "--number_of_epochs=4",
                      "--lr=0.001")
    return tmp_path, default, finetuned


def test_finetuning_raises_retrieval_on_the_users_classes(runs):
    tmp_path, default, finetuned = runs
    with open(finetuned / "test_metrics.json") as f:
        adapted = json.load(f)["test_2src"]["t2a_R@1"]
    model = SpatialCLAP.from_hparams(source=str(default / "model"),
                                     savedir=str(tmp_path / "unadapted"))
    data_root = tmp_path / "finetune" / "data"
    unadapted = evaluate_manifest(model, str(data_root / "manifests" / "test_2src.json"),
                                  data_root=str(data_root))["t2a_R@1"]
    assert adapted > unadapted


def test_finetuning_started_from_the_exported_weights(runs):
    _, _, finetuned = runs
    with open(finetuned / "log.txt") as f:
        log = f.read()
    assert "pretrained" in log.lower()
    assert os.path.exists(finetuned / "model" / "audio_encoder.ckpt")


def test_finetune_recipe_requires_a_pretrained_model(tmp_path):
    command = [sys.executable, "train.py", "hparams/finetune.yaml",
               f"--output_folder={tmp_path}"]
    result = subprocess.run(command, cwd=RECIPE, capture_output=True, text=True,
                            timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert result.returncode != 0
    assert "pretrained_model" in result.stdout + result.stderr


def test_finetuning_on_stereo_recordings_uses_the_manifests_as_they_are(runs):
    """User stereo recordings: manifests without simulation (here, the scenes of the
    previous run stand in for recordings; no prepare step runs)."""
    tmp_path, default, finetuned = runs
    data = tmp_path / "finetune" / "data" / "manifests"
    manifests = (f"--manifests={{train: {data / 'train.json'}, valid: {data / 'valid.json'}, "
                 f"test: {data / 'test_2src.json'}}}")
    out = train("hparams/finetune.yaml", tmp_path, "recordings",
                f"--pretrained_model={default / 'model'}", manifests,
                "--dynamic_mixing=False", "--number_of_epochs=1",
                data_folder=tmp_path / "finetune" / "data")
    with open(out / "test_metrics.json") as f:
        metrics = json.load(f)
    assert set(metrics) == {"test"}
    assert "assignment_acc" in metrics["test"]
    assert not (tmp_path / "recordings" / "data").exists()  # nothing was simulated


def test_finetuning_a_model_of_another_architecture_names_the_keys_to_set(runs):
    """A pretrained model whose text pooling differs from finetune.yaml's must stop
    with a message naming the checkpoint and the hyperparameters to set, not train on
    with part of the model at random initialisation."""
    tmp_path, default, _ = runs
    data = tmp_path / "finetune" / "data" / "manifests"
    manifests = (f"--manifests={{train: {data / 'train.json'}, valid: {data / 'valid.json'}, "
                 f"test: {data / 'test_2src.json'}}}")
    command = [sys.executable, "train.py", "hparams/finetune.yaml",
               f"--data_folder={tmp_path / 'finetune' / 'data'}",
               f"--output_folder={tmp_path / 'mismatch' / 'out'}", *COMMON,
               f"--pretrained_model={default / 'model'}", manifests,
               "--dynamic_mixing=False", "--text_pooling_queries=0"]
    result = subprocess.run(command, cwd=RECIPE, capture_output=True, text=True,
                            timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1",
                                                  OMP_NUM_THREADS="1"))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "text_tower.ckpt does not fit" in output
    assert "text_pooling_queries" in output and "hyperparams.yaml" in output
