"""Model parts: stereo features, streams, fusion, text encoder, towers."""
import math

import pytest
import torch

from spatial_clap_sb.models.content import ContentCNN
from spatial_clap_sb.models.features import StereoFeatures
from spatial_clap_sb.models.fusion import (
    AttentionPooling,
    ConcatFusion,
    ProjectionHead,
)
from spatial_clap_sb.models.spatial import SpatialCRNN
from spatial_clap_sb.models.spatial_clap import (
    LearnableTemperature,
    SpatialAudioEncoder,
    TextTower,
)
from spatial_clap_sb.models.text import TextEncoder, pooled_size

SPEED_OF_SOUND = 343.0


def delayed_noise(delay, n=16000, seed=0):
    """White noise in which the LEFT channel leads the right by ``delay`` samples."""
    noise = torch.randn(n + abs(delay), generator=torch.Generator().manual_seed(seed))
    left, right = (noise[delay:], noise[:n]) if delay >= 0 else (noise[:n], noise[-delay:])
    return torch.stack([left[:n], right[:n]], dim=-1)[None]


def gcc_peak_lag(features, spacing=0.17, sample_rate=16000):
    gcc = features[0, 5].mean(0)
    max_delay = 1.25 * spacing / SPEED_OF_SOUND * sample_rate
    return torch.linspace(-max_delay, max_delay, gcc.numel())[gcc.argmax()].item()


def test_stereo_features_shape_and_channels():
    features = StereoFeatures()(torch.randn(3, 32000, 2))
    assert features.shape == (3, 6, 81, 64)
    assert torch.isfinite(features).all()
    cos, sin = features[:, 2], features[:, 3]
    assert torch.allclose(cos ** 2 + sin ** 2, torch.ones_like(cos), atol=1e-3)


def test_log_mel_channels_are_each_channel_heard_alone():
    """Channels 0 and 1 are SpeechBrain's log-mel of the left and of the right signal
    (each example and channel its own, whatever the batch holds)."""
    from speechbrain.processing.features import STFT, Filterbank, spectral_magnitude

    wavs = torch.randn(3, 16000, 2)
    wavs[1] *= 0.1  # a quieter example: the dB floor is per example and channel
    features = StereoFeatures()(wavs)
    stft = STFT(sample_rate=16000, win_length=32, hop_length=25, n_fft=512)
    log_mel = Filterbank(n_mels=64, n_fft=512, sample_rate=16000, f_max=8000)
    for channel in (0, 1):
        alone = log_mel(spectral_magnitude(stft(wavs[..., channel]), power=1))
        assert torch.allclose(features[:, channel], alone, atol=1e-4)
    assert torch.allclose(features[:, 4], features[:, 0] - features[:, 1])


def test_conv_blocks_hand_on_channels_last_maps_from_one_channel_input():
    """oneDNN returns a one-channel input's convolution channels-first; the block
    hands on channels-last maps (the layout its norm and pooling are fast in)."""
    from spatial_clap_sb.models.blocks import ConvBlock

    block = ConvBlock(1, 16, (1, 4))
    x = torch.randn(2, 1, 10, 64).contiguous(memory_format=torch.channels_last)
    out = block(x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert not out.is_contiguous()


@pytest.mark.parametrize("delay", [-6, -3, 3, 6])
def test_gcc_phat_finds_the_delay_with_its_sign(delay):
    features = StereoFeatures()(delayed_noise(delay))
    # The left channel leading by D samples puts the GCC-PHAT peak at lag -D.
    assert gcc_peak_lag(features) == pytest.approx(-delay, abs=0.4)


def test_level_difference_follows_the_louder_channel():
    wav = torch.randn(1, 16000, 2)
    wav[..., 1] *= 0.25  # right 12 dB quieter
    ild = StereoFeatures()(wav)[0, 4]
    assert ild.mean().item() == pytest.approx(20 * math.log10(4), abs=1.5)


def test_stereo_features_reject_mono():
    with pytest.raises(ValueError, match="2"):
        StereoFeatures()(torch.randn(2, 16000))


def small_audio_encoder(content_aware=True, use_spatial_stream=True):
    content = ContentCNN(n_mels=32, channels=(8, 8, 8), output_dim=16)
    spatial = SpatialCRNN(content_dim=16, content_aware=content_aware, n_mels=32,
                          channels=(8, 8, 8), hidden_dim=8)
    spatial_dim = 16 if use_spatial_stream else 0
    return SpatialAudioEncoder(content, spatial, ConcatFusion(16, spatial_dim, 32),
                               AttentionPooling(32, 2), ProjectionHead(64, 24),
                               use_spatial_stream=use_spatial_stream)


@pytest.mark.parametrize("content_aware", [True, False])
@pytest.mark.parametrize("use_spatial_stream", [True, False])
def test_audio_encoder_variants_embed_unit_vectors(content_aware, use_spatial_stream):
    encoder = small_audio_encoder(content_aware, use_spatial_stream).eval()
    with torch.no_grad():
        embedding = encoder(torch.randn(3, 24000, 2), torch.tensor([1.0, 0.7, 0.5]))
    assert embedding.shape == (3, 24)
    assert torch.allclose(embedding.norm(dim=-1), torch.ones(3), atol=1e-5)
    has_spatial = encoder.spatial_encoder is not None
    assert has_spatial == use_spatial_stream


def test_mono_model_cannot_tell_left_from_right():
    """Without the spatial stream, a scene and its mirror image embed identically."""
    encoder = small_audio_encoder(use_spatial_stream=False).train()
    wav = delayed_noise(5)
    with torch.no_grad():
        left, right = encoder(torch.cat([wav, wav.flip(-1)]))
    assert torch.allclose(left, right, atol=1e-6)


def test_spatial_model_tells_left_from_right():
    encoder = small_audio_encoder().train()  # batch statistics: an untrained model
    wav = delayed_noise(5)
    with torch.no_grad():
        left, right = encoder(torch.cat([wav, wav.flip(-1)]))
    assert not torch.allclose(left, right, atol=1e-4)


def test_content_aware_stream_depends_on_content_frames():
    wav = torch.randn(2, 16000, 2)
    aware = SpatialCRNN(content_dim=4, n_mels=32, channels=(4, 4, 4), hidden_dim=4).eval()
    blind = SpatialCRNN(content_dim=4, content_aware=False, n_mels=32, channels=(4, 4, 4),
                        hidden_dim=4).eval()
    a, b = torch.zeros(2, 5, 4), torch.ones(2, 5, 4)
    with torch.no_grad():
        assert not torch.allclose(aware(wav, a), aware(wav, b))
        assert torch.allclose(blind(wav, a), blind(wav, b))


def test_attention_pooling_ignores_padded_frames():
    pooling = AttentionPooling(4, n_queries=2)
    frames = torch.randn(1, 6, 4)
    padded = frames.clone()
    padded[:, 3:] = 100.0
    mask = torch.tensor([[True, True, True, False, False, False]])
    assert torch.allclose(pooling(frames[:, :3]), pooling(padded, mask), atol=1e-6)


def test_temperature_is_clamped():
    temperature = LearnableTemperature(0.001, max_scale=100.0)
    assert temperature().item() == pytest.approx(100.0)


@pytest.fixture(scope="module")
def frozen_text():
    return TextEncoder()


def test_frozen_text_encoder_caches_and_stays_out_of_checkpoints(frozen_text):
    captions = ["a bell rings on the left", "a dog barks on the right"]
    first = frozen_text(captions)
    assert first.shape == (2, 384)
    assert set(frozen_text._cache) >= set(captions)
    assert frozen_text._cache[captions[0]].shape[1] == 384  # token states
    assert torch.equal(first, frozen_text(captions))
    assert not any(k.startswith("_frozen") for k in frozen_text.state_dict())
    assert frozen_text.pretrained_parameters() == []


def test_full_text_cache_clears_without_losing_the_current_batch(frozen_text):
    """A batch that overflows the cache still gets every caption's features."""
    frozen_text._cache.clear()
    frozen_text.cache_size = 3
    try:
        first = frozen_text(["a bell rings", "a dog barks"])
        second = frozen_text(["a dog barks", "a car passes", "rain falls"])
        assert torch.allclose(first[1], second[0], atol=1e-6)
        assert len(frozen_text._cache) <= 3
    finally:
        frozen_text.cache_size = 50_000


def test_frozen_text_states_are_full_precision_under_autocast(frozen_text):
    """A bf16 training step caches the same MiniLM states as evaluation computes."""
    pieces = ["a kettle whistles", "far to the left"]
    reference = TextEncoder(cache_size=0)._token_states(pieces, torch.device("cpu"))
    frozen_text._cache.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        frozen_text.forward_joined([pieces])
    for piece in pieces:
        assert frozen_text._cache[piece].dtype == torch.float32
        assert torch.equal(frozen_text._cache[piece], reference[piece])


def test_attention_pooled_text_features(frozen_text):
    encoder = TextEncoder(pooling_queries=2)
    features = encoder(["a bell rings on the left", "a dog barks"])
    assert features.shape == (2, pooled_size(384, 2)) == (2, 768)
    assert all(p.requires_grad for p in encoder.attention_pooling.parameters())


def test_text_encoder_rejects_empty_captions(frozen_text):
    with pytest.raises(ValueError, match="Caption 1"):
        frozen_text(["a bell", "  "])


def test_frozen_text_is_order_insensitive(frozen_text):
    """Why the recipe adds the text-consistency objective: frozen sentence features of
    a caption and its permuted-assignment twin are nearly the same vector."""
    true, permuted = frozen_text(["a bell rings on the left and a dog barks on the right",
                                  "a dog barks on the left and a bell rings on the right"])
    assert torch.cosine_similarity(true, permuted, dim=0) > 0.9


def test_top_layers_train_and_the_rest_stay_frozen():
    encoder = TextEncoder(trainable_layers=2)
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    assert trainable and all(".layer.4." in n or ".layer.5." in n for n in trainable)
    assert len(encoder.pretrained_parameters()) == len(trainable)
    tower = TextTower(encoder, ProjectionHead(384, 16))
    tower(["a sound on the left"]).sum().backward()
    assert all(p.grad is not None for p in encoder.pretrained_parameters())


def _composed_tower(frozen_text):
    torch.manual_seed(0)
    return TextTower(frozen_text, ProjectionHead(384, 16), compose_clauses=True)


def test_composed_tower_is_the_mean_of_its_clauses(frozen_text):
    tower = _composed_tower(frozen_text)
    scene = "a bell rings on the left, a dog barks in front and rain falls on the right"
    clauses = ["a bell rings on the left", "a dog barks in front", "rain falls on the right"]
    sentence = TextTower(frozen_text, tower.projection)
    expected = torch.nn.functional.normalize(sentence(clauses).mean(0), dim=0)
    embedded = tower([scene, clauses[1], "a sound in front"])
    assert torch.allclose(embedded[0], expected, atol=1e-5)
    # One-clause captions (a source, a direction prompt) are embedded as they are.
    assert torch.allclose(embedded[1:], sentence([clauses[1], "a sound in front"]),
                          atol=1e-5)
    assert torch.allclose(embedded.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_composed_tower_ignores_mention_order_but_not_the_assignment(frozen_text):
    """A scene is the sum of its sources: naming them in another order (or joining them
    with "while") gives the same embedding, moving a sound to another direction not."""
    tower = _composed_tower(frozen_text)
    true, reordered, permuted = tower([
        "a bell rings on the left and a dog barks on the right",
        "a dog barks on the right while a bell rings on the left",
        "a dog barks on the left and a bell rings on the right"])
    assert torch.allclose(true, reordered, atol=1e-6)
    assert not torch.allclose(true, permuted, atol=1e-3)


def test_composed_tower_trains_through_every_clause(frozen_text):
    tower = _composed_tower(frozen_text)
    tower(["a bell rings on the left and a dog barks on the right"]).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for p in tower.projection.parameters())
    with pytest.raises(ValueError, match="Caption 0"):
        tower([""])


def test_text_encoder_names_a_missing_source(tmp_path):
    with pytest.raises(OSError, match="local folder"):
        TextEncoder(source=str(tmp_path / "missing"))


def test_a_clause_with_a_comma_is_read_piece_by_piece(frozen_text):
    """ "to the left, a dog barks" is one clause of two pieces: the transformer reads
    each piece on its own and the pooling sees the token states of both."""
    tower = _composed_tower(frozen_text)
    scene = "To the left, a dog barks; off to the right, rain falls."
    joined = frozen_text.forward_joined([("To the left", "a dog barks"),
                                         ("off to the right", "rain falls")])
    expected = torch.nn.functional.normalize(tower.projection(joined).mean(0), dim=0)
    assert torch.allclose(tower([scene])[0], expected, atol=1e-5)


def test_split_roles_reads_sounds_and_wordings_not_their_combinations(frozen_text):
    """With split_roles the encoder reads each sound and each wording once, whatever
    clause form joins them, and a caption and its permutation differ only in which
    clause holds which direction."""
    torch.manual_seed(0)
    tower = TextTower(frozen_text, ProjectionHead(384, 16), compose_clauses=True,
                      split_roles=True)
    frozen_text._cache.clear()
    true, other_form, permuted = tower([
        "a bell rings on the left and a dog barks on the right",
        "On the right, a dog barks; on the left, a bell rings.",
        "a dog barks on the left and a bell rings on the right"])
    assert set(frozen_text._cache) == {"a bell rings", "a dog barks", "on the left",
                                       "on the right"}
    assert torch.allclose(true, other_form, atol=1e-6)
    assert not torch.allclose(true, permuted, atol=1e-3)
    assert tower.clause_pieces("rain falls on a tin roof") == [["rain falls on a tin roof"]]


def test_pieces_are_joined_in_training_only_and_the_same_way_each_time(frozen_text):
    """piece_join_prob: in training a caption's pieces may be read joined (decided by
    its text, so twice the same); in evaluation they never are."""
    torch.manual_seed(0)
    tower = TextTower(frozen_text, ProjectionHead(384, 16), compose_clauses=True,
                      split_roles=True, piece_join_prob=0.5)
    captions = [f"In this recording, {s} on the left and rain falls on the right"
                for s in ("a bell rings", "a dog barks", "a door slams", "birds chirp",
                          "a car passes", "a phone rings")]
    frozen_text._cache.clear()
    tower.eval()
    evaluated = tower(captions)
    separate = set(frozen_text._cache)
    assert "a bell rings" in separate and "in this recording" in separate
    tower.train()
    first, second = tower(captions), tower(captions)
    assert torch.equal(first, second)
    joined = set(frozen_text._cache) - separate
    assert joined and all(" " in text for text in joined)
    assert not torch.allclose(first, evaluated, atol=1e-3)
    tower.eval()
    assert torch.equal(tower(captions), evaluated)


def test_fillers_are_glued_in_training_only_and_the_same_way_each_time(frozen_text):
    """filler_prob: in training a caption's pieces may be read with a filler glued to
    them (decided by its text, so twice the same); in evaluation they never are."""
    from spatial_clap_sb.language import FILLERS
    torch.manual_seed(0)
    tower = TextTower(frozen_text, ProjectionHead(384, 16), compose_clauses=True,
                      split_roles=True, filler_prob=0.5)
    captions = [f"{s} on the left and rain falls on the right"
                for s in ("a bell rings", "a dog barks", "a door slams", "birds chirp")]
    frozen_text._cache.clear()
    tower.eval()
    evaluated = tower(captions)
    plain = set(frozen_text._cache)
    tower.train()
    first, second = tower(captions), tower(captions)
    assert torch.equal(first, second)
    glued = set(frozen_text._cache) - plain
    assert glued and all(any(f in text for f in FILLERS) for text in glued)
    assert not torch.allclose(first, evaluated, atol=1e-3)
    tower.eval()
    assert torch.equal(tower(captions), evaluated)


def test_an_uncased_encoder_caches_a_capitalised_piece_once(frozen_text):
    frozen_text._cache.clear()
    lower, upper = frozen_text(["a dog barks hard left", "A dog barks hard left"])
    assert torch.allclose(lower, upper)
    assert len(frozen_text._cache) == 1


@pytest.mark.parametrize("overrides", [
    {"spatial_hidden": 8},
    {"spatial_hidden": 8, "use_spatial_stream": False},
    {"content_dim": 24, "pooling_queries": 3, "text_pooling_queries": 2},
])
def test_model_yaml_derives_sizes_from_the_modules(overrides):
    """One size changed on the command line reaches every module that depends on it
    (fusion, spatial stream, projections): the model builds and embeds."""
    from hyperpyyaml import load_hyperpyyaml
    from tiny_model import MODEL_YAML

    with open(MODEL_YAML, encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f, {"n_mels": 32, **overrides})
    audio = hparams["audio_encoder"].eval()
    with torch.no_grad():
        embedding = audio(torch.randn(2, 16000, 2) * 0.1)
        text = hparams["text_tower"](["a dog barks on the left"])
    assert embedding.shape == (2, 512) and text.shape == (1, 512)
    spatial = 2 * overrides["spatial_hidden"] if overrides.get(
        "use_spatial_stream", True) and "spatial_hidden" in overrides else None
    if spatial is not None:
        assert hparams["fusion"].mlp[0].in_features == hparams["content_dim"] + spatial
