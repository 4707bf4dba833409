"""Tests of spatial_clap_sb.models.pretrained_audio (tiny random models, fully offline).

Every model is a tiny randomly initialised transformers model (< 1M parameters) written
with ``save_pretrained`` to a temporary folder, then loaded through
:class:`PretrainedAudioEncoder` exactly as a user's local checkpoint would be.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch
import torchaudio.functional as AF

transformers = pytest.importorskip("transformers")
from transformers import (  # noqa: E402
    ASTConfig,
    ASTFeatureExtractor,
    ASTModel,
    BertConfig,
    ClapAudioConfig,
    ClapAudioModel,
    ClapConfig,
    ClapFeatureExtractor,
    ClapModel,
    ClapTextConfig,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Model,
)

from tiny_model import TINY_AST  # noqa: E402

from spatial_clap_sb.models.pretrained_audio import (  # noqa: E402
    PretrainedAudioEncoder,
    PretrainedAudioLoadError,
)

SR = 16000

# Tiny AST: 32 mel bins x 200 fbank frames (2 s), 16x16 patches, strides 16 (freq) and 10
# (time): a 2 x 19 patch grid. One second of audio = 98 fbank frames -> 10 time patches.
AST_N_FREQ, AST_N_TIME, AST_TIME_1S = 2, 19, 10
# Tiny CLAP (HTS-AT): spec_size 32, 16 mel bins (freq_ratio 2), patch 4, two Swin stages
# (16 then 32 channels). Extractor: 48 kHz, hop 960, max 1 s -> 51 frames (<= 64 = spec width).
# Last hidden state [B, 32, 2 freq, 8 time]; 1 s fills the whole 1 s window.
CLAP_N_FREQ, CLAP_N_TIME = 2, 8
# Tiny wav2vec2: conv strides 5, 4, 4 (kernels 10, 4, 4) -> 199 frames for 16000 samples.
W2V_FRAMES = 199


def _ast_config():
    return ASTConfig(**TINY_AST)


def _clap_audio_config(**overrides):
    kwargs = dict(
        spec_size=32,
        num_mel_bins=16,
        patch_size=4,
        patch_stride=4,
        patch_embeds_hidden_size=16,
        depths=[1, 1],
        num_attention_heads=[2, 2],
        window_size=4,
        hidden_size=32,
        projection_dim=16,
        num_classes=4,
    )
    kwargs.update(overrides)
    return ClapAudioConfig(**kwargs)


def _clap_extractor(**overrides):
    kwargs = dict(
        feature_size=16,
        hop_length=960,
        max_length_s=1,
        truncation="rand_trunc",
        padding="repeatpad",
    )
    kwargs.update(overrides)
    return ClapFeatureExtractor(**kwargs)


def _w2v_config():
    return Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16, 16),
        conv_stride=(5, 4, 4),
        conv_kernel=(10, 4, 4),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        vocab_size=8,
    )


def _n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Saves the tiny models (and their feature extractors); returns {kind: folder}."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("pretrained_audio")
    folders = {}

    ast = ASTModel(_ast_config())
    folders["ast"] = root / "ast"
    ast.save_pretrained(folders["ast"])
    ASTFeatureExtractor(num_mel_bins=32, max_length=200).save_pretrained(folders["ast"])

    clap_audio = ClapAudioModel(_clap_audio_config())
    folders["clap"] = root / "clap"
    clap_audio.save_pretrained(folders["clap"])
    _clap_extractor().save_pretrained(folders["clap"])

    clap_full = ClapModel(
        ClapConfig(
            text_config=ClapTextConfig(
                vocab_size=64,
                hidden_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=64,
                max_position_embeddings=40,
                projection_dim=16,
            ).to_dict(),
            audio_config=_clap_audio_config().to_dict(),
            projection_dim=16,
        )
    )
    folders["clap_full"] = root / "clap_full"
    clap_full.save_pretrained(folders["clap_full"])
    _clap_extractor().save_pretrained(folders["clap_full"])

    w2v = Wav2Vec2Model(_w2v_config())
    folders["wav2vec2"] = root / "wav2vec2"
    w2v.save_pretrained(folders["wav2vec2"])
    Wav2Vec2FeatureExtractor(sampling_rate=SR).save_pretrained(folders["wav2vec2"])

    for model in (ast, clap_audio, clap_full.audio_model, w2v):
        assert _n_params(model) < 1_000_000
    return {k: str(v) for k, v in folders.items()}


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, SR, generator=g) * 0.1, torch.tensor([1.0, 0.6])


KINDS = ["ast", "clap", "clap_full", "wav2vec2"]
EXPECTED = {  # (frames for 1 s with the default frame_mode="tokens", output_dim)
    "ast": (AST_TIME_1S * AST_N_FREQ, 32),
    "clap": (CLAP_N_TIME * CLAP_N_FREQ, 32),
    "clap_full": (CLAP_N_TIME * CLAP_N_FREQ, 32),
    "wav2vec2": (W2V_FRAMES, 32),
}


@pytest.mark.parametrize("kind", KINDS)
def test_forward_shape_finite_frozen(checkpoints, batch, kind):
    enc = PretrainedAudioEncoder(checkpoints[kind])
    mid, lengths = batch
    n_frames, dim = EXPECTED[kind]
    assert enc.output_dim == dim

    # Frozen: no trainable parameter; stays in eval mode when a parent calls .train().
    parent = torch.nn.ModuleDict({"content": enc}).train()
    assert parent.training and enc.training
    assert not enc.model.training
    assert all(not p.requires_grad for p in enc.parameters())
    assert all(not p.requires_grad for p in enc.pretrained_parameters())

    mid = mid.clone().requires_grad_(True)
    out = enc(mid, lengths)
    assert out.shape == (2, n_frames, dim)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert not out.requires_grad  # no gradient flows through a frozen encoder

    # lengths=None means every item is full length.
    out_full = enc(mid.detach())
    assert out_full.shape == (2, n_frames, dim)
    torch.testing.assert_close(out_full[0], out[0])


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic(checkpoints, batch, kind):
    enc = PretrainedAudioEncoder(checkpoints[kind])
    mid, lengths = batch
    assert torch.equal(enc(mid, lengths), enc(mid, lengths))


@pytest.mark.parametrize("kind", ["ast", "clap", "wav2vec2"])
def test_unfrozen_backward(checkpoints, batch, kind):
    torch.manual_seed(0)
    enc = PretrainedAudioEncoder(checkpoints[kind], freeze=False)
    enc.train()
    assert enc.model.training
    params = list(enc.pretrained_parameters())
    assert params and all(p.requires_grad for p in params)
    assert {id(p) for p in params} == {id(p) for p in enc.model.parameters()}

    mid, lengths = batch
    out = enc(mid, lengths)
    assert out.requires_grad
    out.pow(2).mean().backward()
    with_grad = [p for p in params if p.grad is not None and p.grad.abs().sum() > 0]
    # Most of the transformer receives gradient (a few, e.g. wav2vec2's masked_spec_embed
    # or CLAP's unused fusion parts, may not).
    assert len(with_grad) > len(params) // 2
    assert all(torch.isfinite(p.grad).all() for p in with_grad)


@pytest.mark.parametrize(
    "kind, layer, n_frames, dim",
    [
        ("ast", 1, AST_TIME_1S * AST_N_FREQ, 32),
        ("ast", 0, AST_TIME_1S * AST_N_FREQ, 32),
        ("clap", 1, CLAP_N_TIME * CLAP_N_FREQ, 32),
        # Stage-0 (patch embedding) map: 16 channels, 8x8 Swin grid = 4 freq x 16 time.
        ("clap", 0, 64, 16),
        ("clap", -1, CLAP_N_TIME * CLAP_N_FREQ, 32),
        ("wav2vec2", 1, W2V_FRAMES, 32),
    ],
)
def test_output_layer(checkpoints, batch, kind, layer, n_frames, dim):
    enc = PretrainedAudioEncoder(checkpoints[kind], output_layer=layer)
    assert enc.output_dim == dim
    out = enc(*batch)
    assert out.shape == (2, n_frames, dim)
    assert torch.isfinite(out).all()


def test_output_layer_selects_hidden_state(checkpoints, batch):
    """output_layer=i returns hidden_states[i] of the model (wav2vec2: plain time frames)."""
    enc = PretrainedAudioEncoder(checkpoints["wav2vec2"], output_layer=1)
    mid, _ = batch
    out = enc(mid)
    fe = enc.feature_extractor
    inputs = fe(list(mid.numpy()), sampling_rate=SR, return_tensors="pt")
    with torch.no_grad():
        ref = enc.model(inputs["input_values"], output_hidden_states=True).hidden_states[1]
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize(
    "kind, n_frames", [("ast", AST_TIME_1S), ("clap", CLAP_N_TIME), ("wav2vec2", W2V_FRAMES)]
)
def test_frame_mode_time(checkpoints, batch, kind, n_frames):
    enc = PretrainedAudioEncoder(checkpoints[kind], frame_mode="time")
    out = enc(*batch)
    assert out.shape == (2, n_frames, enc.output_dim)
    tokens = PretrainedAudioEncoder(checkpoints[kind])(*batch)
    if kind != "wav2vec2":  # "time" = mean of the frequency patches of each time step
        n_freq = tokens.shape[1] // n_frames
        torch.testing.assert_close(out, tokens.reshape(2, n_frames, n_freq, -1).mean(2))


def test_ast_tokens_are_time_major_and_cropped(checkpoints, batch):
    """Patch tokens come out time-major; the crop keeps the time steps holding audio."""
    mid, lengths = batch
    full = PretrainedAudioEncoder(checkpoints["ast"], output_layer=0, crop_to_input=False)
    out = full(mid, lengths)
    assert out.shape == (2, AST_N_TIME * AST_N_FREQ, 32)
    fe = full.feature_extractor
    items = [mid[0].numpy(), mid[1, : int(0.6 * SR)].numpy()]
    values = torch.as_tensor(fe(items, sampling_rate=SR, return_tensors="np")["input_values"])
    with torch.no_grad():
        emb = full.model.embeddings(values)[:, 2:]  # frequency-major patch tokens
    ref = emb.reshape(2, AST_N_FREQ, AST_N_TIME, 32).transpose(1, 2).reshape(2, -1, 32)
    torch.testing.assert_close(out, ref)

    cropped = PretrainedAudioEncoder(checkpoints["ast"], output_layer=0)(mid, lengths)
    assert cropped.shape == (2, AST_TIME_1S * AST_N_FREQ, 32)
    torch.testing.assert_close(cropped, out[:, : AST_TIME_1S * AST_N_FREQ])


def test_clap_intermediate_unfold_matches_last_hidden_state(checkpoints, batch):
    """Unfolding a Swin hidden state gives the same (freq, time) layout as transformers'."""
    enc = PretrainedAudioEncoder(checkpoints["clap"], output_layer=-1, crop_to_input=False)
    last = enc(*batch)
    enc_layer = PretrainedAudioEncoder(checkpoints["clap"], output_layer=2, crop_to_input=False)
    pre_norm = enc_layer(*batch)  # hidden_states[-1]: last stage before the final LayerNorm
    with torch.no_grad():
        normed = enc_layer.model.audio_encoder.norm(pre_norm)
    torch.testing.assert_close(normed, last)


@pytest.mark.parametrize("kind", ["ast", "clap"])
def test_lengths_trim_items(checkpoints, batch, kind):
    """An item with relative length 0.6 is encoded as its first 60 % alone."""
    enc = PretrainedAudioEncoder(checkpoints[kind], crop_to_input=False)
    mid, lengths = batch
    out = enc(mid, lengths)
    alone = enc(mid[1:2, : int(0.6 * SR)])
    torch.testing.assert_close(out[1:2], alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out[1:2], enc(mid[1:2]), atol=1e-4)


def test_wav2vec2_padding_does_not_change_shape(checkpoints, batch):
    enc = PretrainedAudioEncoder(checkpoints["wav2vec2"])
    mid, _ = batch
    out = enc(mid, torch.tensor([0.5, 0.25]))  # padded to the longest item (8000 samples)
    assert out.shape == (2, 99, 32)


def test_clap_resamples_to_48k(checkpoints, batch):
    mid, lengths = batch
    enc16 = PretrainedAudioEncoder(checkpoints["clap"], sample_rate=16000)
    enc48 = PretrainedAudioEncoder(checkpoints["clap"], sample_rate=48000)
    assert enc16.target_rate == 48000
    # Full-length items: resampling inside equals resampling outside.
    torch.testing.assert_close(enc16(mid), enc48(AF.resample(mid, 16000, 48000)))
    # A trimmed item is cut at 16 kHz and then resampled on its own.
    cut = int(0.6 * SR)
    alone = enc48(AF.resample(mid[1:, :cut], 16000, 48000))
    # Alone, 0.6 s is cropped to ceil(0.6 * 8) = 5 time steps (x 2 frequency patches).
    assert alone.shape == (1, 5 * CLAP_N_FREQ, 32)
    torch.testing.assert_close(enc16(mid, lengths)[1:, : 5 * CLAP_N_FREQ], alone)


def test_clap_full_checkpoint_uses_audio_tower_weights(checkpoints):
    enc = PretrainedAudioEncoder(checkpoints["clap_full"])
    assert isinstance(enc.model, ClapAudioModel)
    saved = ClapModel.from_pretrained(checkpoints["clap_full"]).audio_model.state_dict()
    loaded = enc.model.state_dict()
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)


def test_fused_clap_is_deterministic(tmp_path):
    """A fused CLAP (extractor truncation="fusion") does not pick a random "longer" item.

    transformers' fusion path hard-codes 64 mel bins, so this config is a little larger.
    """
    torch.manual_seed(0)
    cfg = _clap_audio_config(
        spec_size=128, num_mel_bins=64, enable_fusion=True, fusion_type="aff_2d"
    )
    model = ClapAudioModel(cfg)
    assert _n_params(model) < 1_000_000
    model.save_pretrained(tmp_path)
    _clap_extractor(feature_size=64, hop_length=480, truncation="fusion").save_pretrained(tmp_path)
    enc = PretrainedAudioEncoder(str(tmp_path))
    g = torch.Generator().manual_seed(2)
    short = torch.randn(2, SR, generator=g) * 0.1
    long = torch.randn(2, 2 * SR, generator=g) * 0.1  # longer than max_length_s: random crops
    for mid, lengths in ((short, torch.tensor([1.0, 0.6])), (long, torch.tensor([1.0, 0.3]))):
        first = enc(mid, lengths)
        assert torch.isfinite(first).all()
        assert torch.equal(first, enc(mid, lengths))


def test_bad_source_raises_naming_path(tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(PretrainedAudioLoadError) as info:
        PretrainedAudioEncoder(str(missing))
    message = str(info.value)
    assert str(missing) in message
    assert "offline" in message and "save_pretrained" in message
    assert isinstance(info.value, OSError)


def test_missing_feature_extractor_raises(tmp_path):
    ASTModel(_ast_config()).save_pretrained(tmp_path)  # no preprocessor_config.json
    with pytest.raises(PretrainedAudioLoadError, match="feature extractor") as info:
        PretrainedAudioEncoder(str(tmp_path))
    assert str(tmp_path) in str(info.value)


def test_wav2vec2_without_extractor_falls_back(tmp_path, batch):
    Wav2Vec2Model(_w2v_config()).save_pretrained(tmp_path)
    enc = PretrainedAudioEncoder(str(tmp_path))
    assert enc.target_rate == 16000
    assert enc(*batch).shape == (2, W2V_FRAMES, 32)


def test_unsupported_model_type(tmp_path):
    BertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    ).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="Unsupported"):
        PretrainedAudioEncoder(str(tmp_path))


def test_invalid_frame_mode(checkpoints):
    with pytest.raises(ValueError, match="frame_mode"):
        PretrainedAudioEncoder(checkpoints["ast"], frame_mode="patches")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", ["ast", "clap", "wav2vec2"])
def test_cuda_forward(checkpoints, batch, kind):
    enc = PretrainedAudioEncoder(checkpoints[kind]).cuda()
    mid, lengths = batch
    out = enc(mid.cuda(), lengths.cuda())
    assert out.device.type == "cuda"
    torch.testing.assert_close(
        out.cpu(), PretrainedAudioEncoder(checkpoints[kind])(mid, lengths), atol=1e-4, rtol=1e-4
    )
