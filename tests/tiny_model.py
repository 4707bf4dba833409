"""A tiny exported Spatial-CLAP model, a tiny pretrained audio model and test audio,
shared by the inference, CLI and pretrained-encoder tests (the fixtures that use them
are in conftest.py)."""
import io
import os

import numpy as np
import soundfile as sf
import torch
from hyperpyyaml import load_hyperpyyaml, resolve_references

from spatial_clap_sb.inference import SpatialCLAP

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_YAML = os.path.join(REPO, "hparams", "spatial_clap_model.yaml")
SR = 16000
EMB_DIM = 32
TINY_OVERRIDES = dict(n_mels=32, content_dim=16, spatial_hidden=8,
                      fusion_dim=16, pooling_queries=2, embedding_dim=EMB_DIM)

# A tiny AST (< 1M parameters): 32 mel bins x 200 fbank frames (2 s), 16x16 patches,
# strides 16 (freq) and 10 (time): a 2 x 19 patch grid.
TINY_AST = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=64, patch_size=16, num_mel_bins=32, max_length=200,
                frequency_stride=16, time_stride=10)

# The recipe on a few generated scenes (command-line overrides of spatial_clap.yaml).
TINY_RECIPE = [
    "--n_clips_per_class=3",
    "--scene_counts={train: {1: 12, 2: 12}, valid: {1: 6, 2: 6}, test_1src: {1: 6}, "
    "test_2src: {2: 6}, test_3src: {3: 4}}",
    "--train_scene_counts={1: 12, 2: 12}",
    "--spatialiser={sample_rate: 16000, n_rooms: 1, positions_per_zone: 2, max_order: 2}",
    "--batch_size=8",
    "--warmup_steps=1",
    "--text_trainable_layers=0",
    "--lr=0.003",
]

_CACHE = {}  # one tiny model and one set of wavs per test session (shared with test_cli)


# ---------------------------------------------------------------------------- builders


def tiny_hparams_text(extra="", **overrides):
    """The model YAML at tiny sizes, references resolved (as an exported folder has)."""
    with open(MODEL_YAML, encoding="utf-8") as f:
        text = f.read()
    assert text.count("channels: [16, 32, 64]") == 2, "model YAML layout changed"
    text = text.replace("channels: [16, 32, 64]", "channels: [8, 8, 8]") + extra
    stream = io.StringIO(text)
    stream.name = MODEL_YAML  # its !include:zones.yaml resolves next to the model file
    return resolve_references(stream, {**TINY_OVERRIDES, **overrides}).getvalue()


def export_tiny_model(folder, extra_yaml="", seed=0, modify=None, **overrides):
    """Writes an exported tiny model folder (mirrors spatial_clap_sb.export);
    ``modify(hparams)`` may change the modules before they are saved."""
    os.makedirs(folder, exist_ok=True)
    text = tiny_hparams_text(extra_yaml, **overrides)
    with open(os.path.join(folder, "hyperparams.yaml"), "w", encoding="utf-8") as f:
        f.write(text)
    torch.manual_seed(seed)
    hparams = load_hyperpyyaml(text)
    with torch.no_grad():  # non-trivial BatchNorm statistics, as after training
        for module in hparams["modules"]["audio_encoder"].modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1.0, 1.0)
                module.running_var.uniform_(0.5, 2.0)
    if modify is not None:
        modify(hparams)
    for name, module in hparams["modules"].items():
        torch.save(module.state_dict(), os.path.join(folder, f"{name}.ckpt"))
    return folder


def save_tiny_ast(folder, seed=0):
    """Saves a randomly initialised tiny AST and its feature extractor to ``folder``
    (loaded offline as a user's local checkpoint would be); returns the folder."""
    from transformers import ASTConfig, ASTFeatureExtractor, ASTModel

    torch.manual_seed(seed)
    ASTModel(ASTConfig(**TINY_AST)).save_pretrained(folder)
    ASTFeatureExtractor(num_mel_bins=TINY_AST["num_mel_bins"],
                        max_length=TINY_AST["max_length"]).save_pretrained(folder)
    return str(folder)


def _noise(seconds, sr, seed):
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    envelope = 0.5 + 0.5 * np.sin(np.linspace(0, 6 * np.pi, n)) ** 2
    return (0.2 * rng.standard_normal(n) * envelope).astype(np.float32)


def stereo(seconds, sr=SR, delay=6, seed=0):
    """Noise from one side: the far channel is delayed by ``delay`` samples (>0: left
    source) and attenuated."""
    source = _noise(seconds, sr, seed)
    late = np.concatenate([np.zeros(abs(delay), np.float32), source])[:len(source)] * 0.6
    left, right = (source, late) if delay >= 0 else (late, source)
    return np.stack([left, right], axis=1)


def make_audio_files(folder):
    """Stereo (16 and 44.1 kHz, short, 2 s, 5 s), mono, 3-channel, corrupt and empty."""
    os.makedirs(folder, exist_ok=True)
    files = {
        "left": ("left.wav", stereo(2.0, delay=6, seed=1), SR),
        "right": ("right.wav", stereo(2.0, delay=-6, seed=2), SR),
        "hi_rate": ("hi_rate_44k.wav", stereo(2.0, sr=44100, delay=15, seed=3), 44100),
        "short": ("short.wav", stereo(0.7, delay=3, seed=4), SR),
        "long": ("long_5s.wav", stereo(5.0, delay=-3, seed=5), SR),
        "mono": ("mono.wav", _noise(1.0, SR, 6), SR),
        "three": ("three_channels.wav",
                  np.stack([_noise(1.0, SR, s) for s in (7, 8, 9)], axis=1), SR),
        "header_only": ("header_only.wav", np.zeros((0, 2), np.float32), SR),
    }
    paths = {}
    for key, (name, data, sr) in files.items():
        paths[key] = os.path.join(folder, name)
        sf.write(paths[key], data, sr, subtype="PCM_16")
    paths["corrupt"] = os.path.join(folder, "corrupt.wav")
    with open(paths["corrupt"], "wb") as f:
        f.write(np.random.default_rng(10).bytes(3000))
    paths["empty"] = os.path.join(folder, "empty.wav")
    open(paths["empty"], "wb").close()
    paths["missing"] = os.path.join(folder, "does_not_exist.wav")
    return paths


def session_setup(tmp_path_factory):
    """(model folder, audio file paths, loaded model), built once per session."""
    if "setup" not in _CACHE:
        root = tmp_path_factory.mktemp("spatial_clap_inference")
        folder = export_tiny_model(str(root / "model"))
        files = make_audio_files(str(root / "audio"))
        model = SpatialCLAP.from_hparams(source=folder, savedir=str(root / "savedir"))
        _CACHE["setup"] = (folder, files, model)
    return _CACHE["setup"]

