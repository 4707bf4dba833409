"""Tests of the training objective (spatial_clap_sb.objective): named terms, weights."""
import random
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from spatial_clap_sb.language import ZoneVocabulary
from spatial_clap_sb.objective import TERMS, SpatialCLAPObjective

D = 8
ZONES = ZoneVocabulary.default()
WEIGHTS = dict(scl_weight=1.0, text_consistency_weight=3.0, direction_weight=1.0,
               source_zone_weight=3.0, content_weight=1.0)


def hashed_tower(captions):
    """A deterministic text tower: unit vectors drawn from each caption's hash."""
    rows = []
    for caption in captions:
        generator = torch.Generator().manual_seed(sum(map(ord, caption)) * 7919)
        rows.append(torch.randn(D, generator=generator))
    return F.normalize(torch.stack(rows), dim=-1)


def batch():
    """Two scenes as the Brain's batches hold them: a one-source scene (zone 0) and a
    two-source scene."""
    dog = {"caption": "a dog barks", "label": "dog", "zone": "left"}
    bell = {"caption": "a bell rings", "label": "bell", "zone": "right"}
    return SimpleNamespace(
        caption=["a dog barks on the left",
                 "a dog barks on the left and a bell rings on the right"],
        captions=[["a dog barks on the left", "on the left, a dog barks"],
                  ["a dog barks on the left and a bell rings on the right",
                   "to the right a bell rings, while to the left a dog barks"]],
        permuted=[[], ["a dog barks on the right and a bell rings on the left"]],
        zone_index=SimpleNamespace(data=torch.tensor([0, -1])),
        sources=[[dog], [dog, bell]])


def objective_terms(objective, rng=None):
    scenes = batch()
    audio = F.normalize(torch.randn(2, D), dim=-1)
    return objective(audio, scenes, hashed_tower, torch.tensor(10.0),
                     rng or random.Random(0))


def test_every_term_that_is_on_is_returned_by_name():
    objective = SpatialCLAPObjective(ZONES, **WEIGHTS)
    objective.add_source_zone_head(["dog", "bell"], D)
    terms = objective_terms(objective)
    assert sorted(terms) == sorted(TERMS)
    assert all(value.dim() == 0 and torch.isfinite(value) for value in terms.values())


@pytest.mark.parametrize("off", ["scl", "text_consistency", "direction", "source_zone",
                                 "content"])
def test_a_term_with_weight_zero_is_off(off):
    weights = dict(WEIGHTS, **{f"{off}_weight": 0.0})
    objective = SpatialCLAPObjective(ZONES, **weights)
    objective.add_source_zone_head(["dog", "bell"], D)
    terms = objective_terms(objective)
    assert off not in terms and "clap" in terms
    assert len(terms) == len(TERMS) - 1


def test_total_is_the_weighted_sum_and_gradients_reach_the_read_out():
    objective = SpatialCLAPObjective(ZONES, **WEIGHTS)
    head = objective.add_source_zone_head(["dog", "bell"], D)
    terms = objective_terms(objective)
    expected = (terms["clap"] + terms["scl"] + 3 * terms["text_consistency"]
                + terms["direction"] + 3 * terms["source_zone"] + terms["content"])
    total = objective.total(terms)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    total.backward()
    assert head.readout.weight.grad is not None and head.readout.weight.grad.abs().sum() > 0


def test_the_same_generator_draws_the_same_terms():
    objective = SpatialCLAPObjective(ZONES, **WEIGHTS)
    objective.add_source_zone_head(["dog", "bell"], D)
    torch.manual_seed(0)
    first = objective_terms(objective, random.Random(3))
    torch.manual_seed(0)
    again = objective_terms(objective, random.Random(3))
    assert all(torch.equal(first[name], again[name]) for name in TERMS)


def test_every_text_of_a_step_goes_through_the_tower_in_one_call():
    """Captions, negatives, paraphrases, prompts and content negatives: one call, and
    each term sees the rows of its own texts."""
    objective = SpatialCLAPObjective(ZONES, **WEIGHTS)
    objective.add_source_zone_head(["dog", "bell"], D)
    calls = []

    def recording_tower(captions):
        calls.append(list(captions))
        return hashed_tower(captions)

    scenes = batch()
    audio = F.normalize(torch.randn(2, D), dim=-1)
    merged = objective(audio, scenes, recording_tower, torch.tensor(10.0),
                       random.Random(5))
    assert len(calls) == 1
    texts = calls[0]
    assert texts[:2] == scenes.caption
    assert scenes.permuted[1][0] in texts
    assert sum(text.startswith("to the right a bell") for text in texts) == 1  # paraphrase
    # The same terms as embedding each part on its own (hashed_tower is row-wise).
    separate = objective.terms(
        audio, hashed_tower(scenes.caption), torch.tensor(10.0),
        **_separately_embedded(objective, scenes, audio, random.Random(5)))
    for name in TERMS:
        assert torch.allclose(merged[name], separate[name]), name


def _separately_embedded(objective, scenes, audio, rng):
    """The non-caption inputs of ``terms``, each part through the tower on its own,
    drawn in the objective's order."""
    import numpy as np

    from spatial_clap_sb.language import random_direction_prompts
    from spatial_clap_sb.losses import embed_negatives
    from spatial_clap_sb.objective import content_swapped_captions, pick_paraphrases

    negatives, mask = embed_negatives(hashed_tower, scenes.permuted, audio)
    paraphrases, usable = pick_paraphrases(scenes.caption, scenes.captions, rng)
    prompts = random_direction_prompts(np.random.default_rng(rng.getrandbits(64)), ZONES)
    content = embed_negatives(hashed_tower, content_swapped_captions(
        scenes.caption, scenes.sources, rng), audio)
    return dict(negatives=negatives, mask=mask, paraphrases=hashed_tower(paraphrases),
                usable=torch.tensor(usable), prompts=hashed_tower(prompts),
                zone_index=scenes.zone_index.data, sources=scenes.sources,
                content=content)


def test_misspelled_or_negative_weights_are_errors():
    with pytest.raises(TypeError):
        SpatialCLAPObjective(ZONES, scl_wieght=1.0)
    with pytest.raises(ValueError, match="direction"):
        SpatialCLAPObjective(ZONES, direction_weight=-1.0)


def test_source_zone_term_needs_its_read_out_and_labels():
    objective = SpatialCLAPObjective(ZONES, **WEIGHTS)
    with pytest.raises(RuntimeError, match="add_source_zone_head"):
        objective_terms(objective)
    assert objective.add_source_zone_head([], D) is None  # no classes: the term is off
    assert not objective.is_on("source_zone")
    assert "source_zone" not in objective_terms(objective)
    off = SpatialCLAPObjective(ZONES, **dict(WEIGHTS, source_zone_weight=0.0))
    assert off.add_source_zone_head(["dog"], D) is None
    assert not list(off.parameters())  # nothing to train or checkpoint


def test_built_from_the_recipe_yaml_with_its_weights():
    from hyperpyyaml import load_hyperpyyaml

    yaml = """
zones: [{name: left, low: -90, high: 0, phrases: [on the left]},
        {name: right, low: 0, high: 90, phrases: [on the right]}]
scl_weight: 1.0
objective: !new:spatial_clap_sb.objective.SpatialCLAPObjective
    zones: !ref <zones>
    scl_weight: !ref <scl_weight>
    direction_weight: 0.5
"""
    objective = load_hyperpyyaml(yaml, {"scl_weight": 0.0})["objective"]
    assert objective.weights == {"clap": 1.0, "scl": 0.0, "text_consistency": 0.0,
                                 "direction": 0.5, "source_zone": 0.0, "content": 0.0}
    assert objective.zones.names == ["left", "right"]


def test_a_read_out_of_one_class_per_clip_is_refused_with_the_fix():
    """A corpus without labels counts each clip as a class: at corpus scale the head
    would hold hundreds of millions of weights, so it is an error naming the fix."""
    objective = SpatialCLAPObjective(ZONES, **WEIGHTS)
    head = objective.add_source_zone_head([f"label{i}" for i in range(25)], 512)
    assert head.readout.weight.numel() == 25 * 5 * 512  # the default's size is built
    clips = [f"clip{i:05d}" for i in range(49_000)]  # AudioCaps-sized, no labels
    with pytest.raises(ValueError, match=r"49000 classes.*source_zone_weight=0"):
        SpatialCLAPObjective(ZONES, **WEIGHTS).add_source_zone_head(clips, 512)


def test_content_negatives_change_one_sound_and_keep_every_direction():
    from spatial_clap_sb.objective import content_swapped_captions

    scenes = batch()
    rain = {"caption": "rain falls", "label": "rain", "zone": "front"}
    captions = scenes.caption + ["Rain falls in front"]
    negatives = content_swapped_captions(captions, scenes.sources + [[rain]],
                                         random.Random(0), per_scene=2)
    assert set(negatives[0]) == {"a bell rings on the left", "rain falls on the left"}
    assert negatives[1] and all(
        "on the left" in n and "on the right" in n and "rain falls" in n
        for n in negatives[1])  # dog or bell replaced by the only other sound
    assert set(negatives[2]) == {"a dog barks in front", "a bell rings in front"}
