"""Tests of the SpatialCLAP inference interface on a tiny exported model.

The model is the real architecture of ``hparams/spatial_clap_model.yaml`` at small sizes
(random weights, frozen offline MiniLM text encoder), exported the way
``spatial_clap_sb.export.export_model`` does (``hyperparams.yaml`` + one ``.ckpt`` per
module) and loaded with ``SpatialCLAP.from_hparams``.
"""
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from tiny_model import (
    EMB_DIM,
    REPO,
    SR,
    export_tiny_model,
    stereo,
)

from spatial_clap_sb.data.audio_io import AudioReadError, ChannelCountError, load_stereo
from spatial_clap_sb.inference import SpatialCLAP, window_starts
from spatial_clap_sb.language import direction_prompts


def _batch(*arrays):
    return torch.from_numpy(np.stack(arrays))


# ---------------------------------------------------------------------------- loading


def test_loads_in_eval_mode_with_frozen_parameters(model):
    assert isinstance(model, SpatialCLAP)
    assert set(model.MODULES_NEEDED) <= set(model.mods.keys())
    assert model.sample_rate == SR
    assert model.zone_names == ["left", "front-left", "front", "front-right", "right"]
    assert model.chunk_seconds == 2.0 and model.chunk_samples == 2 * SR  # the default
    norms = [m for m in model.mods.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    assert not any(p.requires_grad for p in model.mods.parameters())
    assert model.logit_scale() == pytest.approx(1 / 0.07, rel=1e-5)


def test_weights_come_from_the_checkpoints(setup, model):
    folder = setup[0]
    saved = torch.load(os.path.join(folder, "audio_encoder.ckpt"), weights_only=True)
    for key, value in model.mods.audio_encoder.state_dict().items():
        assert torch.equal(value.cpu(), saved[key]), key


def test_eval_mode_is_restored_after_train(model, files):
    wav = _batch(load_stereo(files["left"], SR))
    before = model.encode_audio(wav)
    model.train()
    try:
        after = model.encode_audio(wav)
        assert not model.mods.training
    finally:
        model.eval()
    assert torch.allclose(before, after, atol=1e-6)


def test_chunk_seconds_from_hparams(tmp_path):
    folder = export_tiny_model(str(tmp_path / "model"), chunk_seconds=1.5)
    model = SpatialCLAP.from_hparams(source=folder)  # no savedir: reads the folder
    assert model.chunk_seconds == 1.5 and model.chunk_samples == 24000


def test_embedding_audio_never_loads_the_frozen_text_transformer(model_dir, files):
    """A frozen MiniLM is read from its folder at the first text, not at load: a
    process that only embeds audio does without its weights in memory."""
    fresh = SpatialCLAP.from_hparams(source=model_dir)
    encoder = fresh.mods.text_tower.text_encoder
    fresh.encode_files([files["left"]])
    assert encoder.frozen and not encoder._frozen_model
    texts = fresh.encode_text(["a dog barks on the left"])
    assert len(encoder._frozen_model) == 1 and not encoder.frozen_model().training
    assert not any(p.requires_grad for p in encoder.frozen_model().parameters())
    assert torch.allclose(texts, fresh.encode_text(["a dog barks on the left"]))


def test_mismatched_checkpoint_is_an_error(tmp_path):
    folder = export_tiny_model(str(tmp_path / "model"))
    torch.save({"not_a_weight": torch.zeros(1)}, os.path.join(folder, "temperature.ckpt"))
    with pytest.raises(ValueError, match="temperature.ckpt does not fit"):
        SpatialCLAP.from_hparams(source=folder, savedir=str(tmp_path / "save"))


def test_fine_tuned_text_encoder_weights_are_loaded(tmp_path):
    """With text_trainable_layers: all (fine-tuning the whole text model) the exported tower
    carries the fine-tuned transformer, which must replace the pristine MiniLM."""
    captions = ["a dog barks on the left", "a car passes on the right"]
    seen = {}

    def fine_tune(hparams):
        tower = hparams["text_tower"].eval()
        with torch.no_grad():
            seen["pristine"] = tower.text_encoder(captions)
            for p in tower.text_encoder.transformer.parameters():
                p.add_(0.05 * torch.randn_like(p))
            seen["features"] = tower.text_encoder(captions)
            seen["expected"] = F.normalize(tower(captions), dim=-1)

    folder = export_tiny_model(str(tmp_path / "model"), modify=fine_tune,
                               text_trainable_layers="all")
    assert not torch.allclose(seen["pristine"], seen["features"], atol=1e-2)
    expected = seen["expected"]
    model = SpatialCLAP.from_hparams(source=folder, savedir=str(tmp_path / "save"))
    assert torch.allclose(model.encode_text(captions), expected, atol=1e-5)


def test_load_audio_keeps_stereo(model, files):
    wav = model.load_audio(files["hi_rate"])
    assert wav.shape == (2 * SR, 2)
    assert not torch.allclose(wav[:, 0], wav[:, 1])


# ---------------------------------------------------------------------------- encode_audio


def test_encode_audio_is_unit_norm(model, files):
    emb = model.encode_audio(_batch(load_stereo(files["left"], SR),
                                    load_stereo(files["right"], SR)))
    assert emb.shape == (2, EMB_DIM)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert not emb.requires_grad
    assert not torch.allclose(emb[0], emb[1], atol=1e-6)  # left and right differ


def test_batch_equals_items_one_by_one(model):
    wavs = torch.from_numpy(np.stack([stereo(1.5, delay=d, seed=s)
                                      for d, s in ((5, 20), (-5, 21), (0, 22), (2, 23))]))
    batched = model.encode_audio(wavs)
    single = torch.cat([model.encode_audio(wavs[i:i + 1]) for i in range(len(wavs))])
    assert torch.allclose(batched, single, atol=1e-5)


def test_bf16_audio_tower_is_close_to_fp32(model_dir, model, files):
    """``audio_precision="bf16"`` runs the audio tower in bfloat16 autocast: other
    embeddings, within a small angle of fp32's; the text tower is untouched."""
    bf16 = SpatialCLAP.from_hparams(source=model_dir, audio_precision="bf16")
    wavs = _batch(*(load_stereo(files[name], SR) for name in ("left", "right")))
    full, reduced = model.encode_audio(wavs), bf16.encode_audio(wavs)
    assert reduced.dtype == torch.float32
    assert torch.allclose(reduced.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert not torch.equal(full, reduced)
    assert F.cosine_similarity(full, reduced).min() > 0.999
    assert torch.equal(model.encode_text(["a dog barks on the left"]),
                       bf16.encode_text(["a dog barks on the left"]))
    with pytest.raises(ValueError, match="audio_precision must be one of"):
        SpatialCLAP.from_hparams(source=model_dir, audio_precision="fp16")


def test_encode_audio_with_relative_lengths(model):
    wavs = torch.from_numpy(np.stack([stereo(1.0, seed=30), stereo(1.0, seed=31)]))
    emb = model.encode_audio(wavs, wav_lens=torch.tensor([1.0, 0.5]))
    assert emb.shape == (2, EMB_DIM)
    with pytest.raises(ValueError, match="wav_lens"):
        model.encode_audio(wavs, wav_lens=torch.tensor([1.0]))


@pytest.mark.parametrize("shape", [(2, 16000), (2, 16000, 1)])
def test_mono_audio_needs_allow_mono(model, shape):
    mono = torch.randn(*shape) * 0.1
    with pytest.raises(ValueError, match=r"two channels.*channel 0 = left"):
        model.encode_audio(mono)
    with pytest.warns(UserWarning, match="meaningless"):
        emb = model.encode_audio(mono, allow_mono=True)
    duplicated = mono.reshape(2, 16000, 1).expand(-1, -1, 2)
    assert torch.allclose(emb, model.encode_audio(duplicated), atol=1e-6)


def test_more_than_two_channels_is_an_error(model):
    with pytest.raises(ValueError, match="3 channels"):
        model.encode_audio(torch.randn(1, 16000, 3))
    with pytest.raises(ValueError, match="channels-first"):
        model.encode_audio(torch.randn(1, 2, 16000))
    with pytest.raises(ValueError, match=r"\[batch, time, 2\]"):
        model.encode_audio(torch.randn(16000))


# ---------------------------------------------------------------------------- files


def test_encode_files_resamples_to_the_model_rate(model, files):
    emb = model.encode_files([files["hi_rate"]])
    expected = model.encode_audio(_batch(load_stereo(files["hi_rate"], SR)))
    assert emb.shape == (1, EMB_DIM)
    assert torch.allclose(emb, expected, atol=1e-6)


def test_files_of_different_lengths_in_one_call(model, files):
    keys = ["long", "short", "left", "hi_rate", "right"]
    together = model.encode_files([files[k] for k in keys], batch_size=3)
    alone = torch.cat([model.encode_files([files[k]]) for k in keys])
    assert together.shape == (5, EMB_DIM)
    assert torch.allclose(together, alone, atol=1e-5)
    assert torch.allclose(together.norm(dim=-1), torch.ones(5), atol=1e-5)


def test_short_file_is_embedded_whole(model, files):
    wav = load_stereo(files["short"], SR)
    assert wav.shape[0] < model.chunk_samples
    assert torch.allclose(model.encode_files([files["short"]]),
                          model.encode_audio(_batch(wav)), atol=1e-6)


def test_long_file_is_the_mean_of_its_windows(model, files):
    wav = load_stereo(files["long"], SR)
    assert wav.shape[0] == 5 * SR
    emb = model.encode_files([files["long"]])
    assert emb.norm().item() == pytest.approx(1.0, abs=1e-5)
    window = 2 * SR  # default chunk_seconds = 2.0: windows [0, 2], [2, 4], [3, 5] s
    assert window_starts(wav.shape[0], window) == [0, window, wav.shape[0] - window]
    windows = _batch(*[wav[s:s + window] for s in (0, window, 3 * SR)])
    expected = F.normalize(model.encode_audio(windows).mean(dim=0), dim=-1)
    assert torch.allclose(emb[0], expected, atol=1e-5)
    assert not torch.allclose(emb[0], model.encode_audio(windows[:1])[0], atol=1e-4)


def test_window_starts():
    assert window_starts(5, 2) == [0, 2, 3]
    assert window_starts(6, 2) == [0, 2, 4]
    assert window_starts(2, 2) == [0]
    assert window_starts(1, 2) == [0]
    with pytest.raises(ValueError):
        window_starts(5, 0)


def test_encode_files_is_deterministic_within_a_process(model, files):
    paths = [files["long"], files["left"]]
    assert torch.equal(model.encode_files(paths), model.encode_files(paths))


def test_encode_files_is_deterministic_across_processes(setup, model, tmp_path):
    folder, files, _ = setup
    out = tmp_path / "emb.npy"
    script = textwrap.dedent(f"""
        import numpy as np
        from spatial_clap_sb.inference import SpatialCLAP
        model = SpatialCLAP.from_hparams(source={folder!r}, savedir={str(tmp_path)!r})
        emb = model.encode_files([{files['long']!r}, {files['hi_rate']!r}])
        np.save({str(out)!r}, emb.numpy())
    """)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True,
                            text=True, env=env, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    here = model.encode_files([files["long"], files["hi_rate"]]).numpy()
    assert np.abs(np.load(out) - here).max() < 1e-6


@pytest.mark.parametrize("key, error, message", [
    ("missing", FileNotFoundError, "not found"),
    ("corrupt", AudioReadError, "not a readable audio file"),
    ("empty", AudioReadError, "not a readable audio file"),
    ("header_only", AudioReadError, "empty"),
    ("mono", ChannelCountError, "two channels"),
    ("three", ChannelCountError, "3 channel"),
])
def test_bad_files_raise_errors_naming_the_file(model, files, key, error, message):
    with pytest.raises(error, match=message) as info:
        model.encode_files([files["left"], files[key]])
    assert files[key] in str(info.value)


def test_files_read_ahead_in_a_thread_give_the_same_embeddings(model, files,
                                                               monkeypatch):
    """With spare cores the next group is read in a thread: same embeddings, same order,
    and a bad file in a later group still raises its own error."""
    import spatial_clap_sb.inference as inference

    keys = ["long", "short", "left", "hi_rate", "right"]
    monkeypatch.setattr(inference, "_spare_cores", lambda: False)
    in_turn = model.encode_files([files[k] for k in keys], batch_size=2)
    monkeypatch.setattr(inference, "_spare_cores", lambda: True)
    read_ahead = model.encode_files([files[k] for k in keys], batch_size=2)
    assert torch.equal(in_turn, read_ahead)
    with pytest.raises(AudioReadError, match="not a readable audio file") as info:
        model.encode_files([files["left"], files["right"], files["corrupt"]],
                           batch_size=2)
    assert files["corrupt"] in str(info.value)


def test_mono_file_with_allow_mono(model, files):
    with pytest.warns(UserWarning, match="meaningless"):
        emb = model.encode_files([files["mono"]], allow_mono=True)
    wav = np.repeat(sf.read(files["mono"], dtype="float32")[0][:, None], 2, axis=1)
    assert torch.allclose(emb, model.encode_audio(_batch(wav)), atol=1e-6)


def test_encode_files_accepts_one_path(model, files):
    assert model.encode_files(files["left"]).shape == (1, EMB_DIM)


# ---------------------------------------------------------------------------- text


def test_encode_text(model):
    captions = ["a dog barks on the left", "a car passes on the right"]
    emb = model.encode_text(captions)
    assert emb.shape == (2, EMB_DIM)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.allclose(emb[1], model.encode_text(captions[1:])[0], atol=1e-6)


def test_scene_queries_are_the_mean_of_their_clauses(model):
    """The exported model composes clauses: the order sounds are named in is irrelevant."""
    clauses = ["a dog barks on the left", "a car passes on the right"]
    scene, reordered, permuted = model.encode_text([
        " and ".join(clauses),
        "a car passes on the right while a dog barks on the left",
        "a car passes on the left and a dog barks on the right"])
    expected = F.normalize(model.encode_text(clauses).sum(0), dim=0)
    assert torch.allclose(scene, expected, atol=1e-5)
    assert torch.allclose(scene, reordered, atol=1e-5)
    assert not torch.allclose(scene, permuted, atol=1e-3)


def test_models_exported_without_clause_composition_embed_whole_captions(tmp_path):
    folder = export_tiny_model(tmp_path / "sentence", text_compose_clauses=False)
    model = SpatialCLAP.from_hparams(source=str(folder), savedir=str(tmp_path / "s"))
    clauses = ["a dog barks on the left", "a car passes on the right"]
    scene = model.encode_text([" and ".join(clauses)])[0]
    assert not model.mods.text_tower.compose_clauses
    assert not torch.allclose(scene, F.normalize(model.encode_text(clauses).sum(0), dim=0),
                              atol=1e-3)


def test_empty_caption_is_named_by_index(model):
    with pytest.raises(ValueError, match="Caption 1"):
        model.encode_text(["a dog barks", "  "])
    with pytest.raises(TypeError):
        model.encode_text("a single string")
    with pytest.raises(ValueError):
        model.encode_text([])


# ---------------------------------------------------------------------------- scoring


def test_similarity_is_cosine(model):
    audio = torch.randn(3, EMB_DIM)
    text = torch.randn(4, EMB_DIM) * 5.0  # not normalised: cosine all the same
    sim = model.similarity(audio, text)
    assert sim.shape == (3, 4)
    expected = F.cosine_similarity(audio[:, None, :], text[None, :, :], dim=-1)
    assert torch.allclose(sim, expected, atol=1e-6)
    assert torch.allclose(model.similarity(audio.numpy(), text[0].numpy()),
                          expected[:, :1], atol=1e-6)
    with pytest.raises(ValueError, match="sizes differ"):
        model.similarity(audio, torch.randn(2, EMB_DIM + 1))


def test_classify_direction(model, files):
    wavs = _batch(load_stereo(files["left"], SR), load_stereo(files["right"], SR))
    zones, probs = model.classify_direction(wavs)
    assert len(zones) == 2 and all(z in model.zone_names for z in zones)
    assert probs.shape == (2, len(model.zone_names))
    assert torch.allclose(probs.sum(dim=-1), torch.ones(2), atol=1e-5)
    assert (probs >= 0).all()
    expected = torch.softmax(model.logit_scale() * model.similarity(
        model.encode_audio(wavs), model.encode_text(direction_prompts(model.zones))), -1)
    assert torch.allclose(probs, expected, atol=1e-5)
    assert zones == [model.zone_names[i] for i in expected.argmax(-1).tolist()]


def test_zero_shot(model, files):
    wavs = _batch(load_stereo(files["left"], SR))
    classes = ["dog", "car", "bell"]
    predicted, probs = model.zero_shot(wavs, classes)
    assert predicted[0] in classes
    assert probs.shape == (1, 3)
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-5)
    prompts = model.encode_text([f"This is a sound of {c}." for c in classes])
    expected = torch.softmax(model.logit_scale()
                             * model.similarity(model.encode_audio(wavs), prompts), -1)
    assert torch.allclose(probs, expected, atol=1e-5)
    _, custom = model.zero_shot(wavs, classes, template="the sound of a {}")
    assert not torch.allclose(custom, probs, atol=1e-7)
    with pytest.raises(ValueError, match="template"):
        model.zero_shot(wavs, classes, template="no slot")
    with pytest.raises(ValueError):
        model.zero_shot(wavs, [])


def test_retrieve_orders_by_score_and_breaks_ties_by_index(model):
    query = "a dog barks on the left"
    t = model.encode_text([query])[0]
    u = torch.randn(EMB_DIM)
    u = F.normalize(u - (u @ t) * t, dim=0)  # orthogonal to the query
    audio = torch.stack([u, t, t, -t, F.normalize(t + u, dim=0)])
    result = model.retrieve(query, audio, k=3)
    assert [i for i, _ in result] == [1, 2, 4]
    assert [s for _, s in result] == pytest.approx([1.0, 1.0, 2 ** -0.5], abs=1e-5)
    full = model.retrieve(query, audio.numpy(), k=10)
    assert [i for i, _ in full] == [1, 2, 4, 0, 3]
    with pytest.raises(ValueError):
        model.retrieve(query, audio, k=0)
    with pytest.raises(TypeError):
        model.retrieve([query], audio)


def test_retrieve_on_file_embeddings(model, files):
    audio = model.encode_files([files["left"], files["right"], files["long"]])
    query = "a sound on the left"
    result = model.retrieve(query, audio, k=5)
    scores = model.similarity(audio, model.encode_text([query]))[:, 0]
    assert len(result) == 3
    assert sorted(i for i, _ in result) == [0, 1, 2]
    for index, score in result:
        assert score == pytest.approx(float(scores[index]), abs=1e-6)
    assert [s for _, s in result] == sorted((s for _, s in result), reverse=True)


def test_no_warning_on_stereo_input(model, files):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.encode_files([files["left"]])


def test_a_long_file_is_streamed_to_the_same_embedding(model, tmp_path):
    """A file longer than STREAMED_WINDOWS windows is read a part at a time; its
    embedding is that of the whole file in memory (same windows, resampling, mean)."""
    from spatial_clap_sb.data.audio_io import load_stereo
    from spatial_clap_sb.inference import STREAMED_WINDOWS

    seconds = STREAMED_WINDOWS * model.chunk_seconds * 1.6 + 0.3  # 2 reads, ragged end
    path = str(tmp_path / "long_44k.wav")
    sf.write(path, stereo(seconds, sr=44100, delay=12, seed=11), 44100, subtype="PCM_16")
    streamed = model.encode_files([path], batch_size=16)
    whole = model.encode_signals([load_stereo(path, model.sample_rate)], batch_size=16)
    assert torch.allclose(streamed, whole, atol=1e-5)
    assert torch.allclose(model.encode_files([path]), streamed, atol=1e-6)
