"""Tests of the zone vocabulary and spatial captions (spatial_clap_sb.language)."""

import dataclasses
import itertools
import math

import numpy as np
import pytest
import yaml

from spatial_clap_sb.language import (
    ENGLISH,
    FILLERS,
    FILLER_WAYS_PER_PIECE,
    FRAME_WORDS,
    N_PHRASINGS,
    Zone,
    ZoneVocabulary,
    caption_clause_pieces,
    caption_clauses,
    compose,
    compose_caption,
    direction_prompt_sets,
    direction_prompts,
    draw_style,
    glue_fillers,
    permuted_assignments,
    permuted_captions,
    random_direction_prompts,
    scene_captions,
    source_clause,
    words_of,
)

DEFAULT_NAMES = ["left", "front-left", "front", "front-right", "right"]

THREE = [
    {"name": "left", "low": -90, "high": -30, "phrase": "on the left"},
    {"name": "centre", "low": -30, "high": 30, "phrase": "in the centre"},
    {"name": "right", "low": 30, "high": 90, "phrase": "on the right"},
]

NINE_NAMES = [f"z{i}" for i in range(9)]
NINE_PHRASES = [f"in sector {i}" for i in range(9)]

# Source captions that are never substrings of one another or of a zone phrase.
DOG = {"caption": "a dog barks", "zone": "left"}
CAR = {"caption": "a car passes", "zone": "right"}
BELL = {"caption": "a bell rings", "zone": "front"}


# ---------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------


def test_default_vocabulary():
    zones = ZoneVocabulary.default()
    assert len(zones) == 5
    assert zones.names == DEFAULT_NAMES
    # Equal widths tiling [-90, 90], left to right, centre-symmetric.
    edges = [(z.low, z.high) for z in zones.zones]
    assert edges[0][0] == pytest.approx(-90.0)
    assert edges[-1][1] == pytest.approx(90.0)
    for (_, high), (low, _) in zip(edges, edges[1:]):
        assert high == pytest.approx(low)
    for zone in zones.zones:
        assert zone.high - zone.low == pytest.approx(36.0)
    assert zones["front"].centre == pytest.approx(0.0)
    for a, b in zip(zones.zones, reversed(zones.zones)):
        assert a.centre == pytest.approx(-b.centre)
    assert [zones.index(n) for n in DEFAULT_NAMES] == list(range(5))
    assert zones["left"].phrase == "on the left"
    assert zones["front"].phrase == "in front"
    assert zones["right"].phrase == "on the right"
    assert len({z.phrase for z in zones.zones}) == 5


def test_from_config_and_round_trip():
    assert ZoneVocabulary.from_config(None).names == DEFAULT_NAMES
    zones = ZoneVocabulary.default()
    assert ZoneVocabulary.from_config(zones) is zones
    rebuilt = ZoneVocabulary.from_config(zones.to_config())
    assert rebuilt.zones == zones.zones
    assert ZoneVocabulary.from_config(THREE).names == ["left", "centre", "right"]


@pytest.mark.parametrize("n", [3, 9])
def test_uniform_vocabularies(n):
    names = NINE_NAMES[:n] if n == 9 else ["l", "c", "r"]
    phrases = NINE_PHRASES[:n] if n == 9 else ["on the left", "ahead", "on the right"]
    zones = ZoneVocabulary.uniform(names, phrases)
    assert len(zones) == n
    assert zones.names == names
    assert [z.phrase for z in zones.zones] == phrases
    width = 180.0 / n
    for i, zone in enumerate(zones.zones):
        assert zone.low == pytest.approx(-90 + i * width)
        assert zone.high == pytest.approx(-90 + (i + 1) * width)
        assert zones.zone_of(zone.centre).name == names[i]


def test_dict_vocabulary():
    zones = ZoneVocabulary(THREE)
    assert zones.names == ["left", "centre", "right"]
    assert all(isinstance(z, Zone) for z in zones.zones)
    assert zones["centre"].phrase == "in the centre"
    assert zones.zone_of(-45.0).name == "left"
    assert zones.zone_of(0.0).name == "centre"
    assert zones.zone_of(60.0).name == "right"
    nine = ZoneVocabulary([
        dict(name=n, low=-90 + 20 * i, high=-70 + 20 * i, phrase=p)
        for i, (n, p) in enumerate(zip(NINE_NAMES, NINE_PHRASES))
    ])
    assert len(nine) == 9
    assert nine.zone_of(85.0).name == "z8"
    assert nine.zone_of(-85.0).name == "z0"


@pytest.mark.parametrize(
    "zones",
    [
        # overlap
        [{"name": "a", "low": -90, "high": 10, "phrase": "a"},
         {"name": "b", "low": 0, "high": 90, "phrase": "b"}],
        # not ordered left to right
        [{"name": "b", "low": 0, "high": 90, "phrase": "b"},
         {"name": "a", "low": -90, "high": 0, "phrase": "a"}],
        # outside the frontal half-plane
        [{"name": "a", "low": -100, "high": 0, "phrase": "a"},
         {"name": "b", "low": 0, "high": 90, "phrase": "b"}],
        [{"name": "a", "low": -90, "high": 0, "phrase": "a"},
         {"name": "b", "low": 0, "high": 95, "phrase": "b"}],
        # duplicate names
        [{"name": "a", "low": -90, "high": 0, "phrase": "a"},
         {"name": "a", "low": 0, "high": 90, "phrase": "b"}],
        # empty interval
        [{"name": "a", "low": 10, "high": 10, "phrase": "a"}],
        # no zone at all
        [],
    ],
    ids=["overlap", "unordered", "below-90", "above90", "duplicate", "empty-zone",
         "no-zones"],
)
def test_invalid_vocabularies_raise(zones):
    with pytest.raises(ValueError):
        ZoneVocabulary(zones)


def test_invalid_uniform_names_raise():
    with pytest.raises(ValueError):
        ZoneVocabulary.uniform(["a", "b", "a"], ["x", "y", "z"])


def test_zone_of():
    zones = ZoneVocabulary.default()
    assert zones.zone_of(-90.0).name == "left"
    assert zones.zone_of(-60.0).name == "left"
    assert zones.zone_of(-40.0).name == "front-left"
    assert zones.zone_of(0.0).name == "front"
    assert zones.zone_of(17.9).name == "front"
    assert zones.zone_of(30.0).name == "front-right"
    assert zones.zone_of(90.0).name == "right"
    for zone in zones.zones:
        assert zones.zone_of(zone.centre) == zone
    for bad in (-90.5, 91.0, 180.0):
        with pytest.raises(ValueError):
            zones.zone_of(bad)


def test_index_of_unknown_zone_raises():
    zones = ZoneVocabulary.default()
    with pytest.raises(KeyError, match="Unknown zone"):
        zones.index("behind")
    with pytest.raises(KeyError):
        zones["behind"]


# ---------------------------------------------------------------------------------
# Scene captions
# ---------------------------------------------------------------------------------


def _positions(text, parts):
    positions = [text.index(p) for p in parts]
    for p in parts:
        assert text.count(p) == 1, (p, text)
    return positions


def test_compose_caption_default_examples():
    assert compose_caption([CAR, DOG]) == (
        "a dog barks on the left and a car passes on the right")
    assert compose_caption([DOG]) == "a dog barks on the left"
    assert compose_caption([BELL], phrasing=2) == "in front, a bell rings"


@pytest.mark.parametrize("phrasing", range(N_PHRASINGS))
def test_compose_caption_orders_left_to_right(phrasing):
    zones = ZoneVocabulary.default()
    sources = [BELL, CAR, DOG]  # front, right, left
    expected = None
    for order in itertools.permutations(sources):
        caption = compose_caption(list(order), phrasing)
        if expected is None:
            expected = caption
        assert caption == expected  # input order never matters
    pos = _positions(expected, ["a dog barks", "a bell rings", "a car passes"])
    assert pos == sorted(pos)
    phrases = [zones[z].phrase for z in ("left", "front", "right")]
    zpos = _positions(expected, phrases)
    assert zpos == sorted(zpos)


def test_compose_caption_is_deterministic():
    sources = [CAR, DOG, BELL]
    first = [compose_caption(sources, p) for p in range(N_PHRASINGS)]
    for _ in range(3):
        assert [compose_caption(sources, p) for p in range(N_PHRASINGS)] == first
    # The inputs are not modified.
    assert sources == [CAR, DOG, BELL]


@pytest.mark.parametrize("sources", [[DOG, CAR], [DOG, CAR, BELL]])
def test_phrasings_differ_and_contain_everything(sources):
    zones = ZoneVocabulary.default()
    captions = [compose_caption(sources, p) for p in range(N_PHRASINGS)]
    assert N_PHRASINGS >= 2
    assert len(set(captions)) == N_PHRASINGS
    for caption in captions:
        for source in sources:
            assert source["caption"] in caption
            assert zones[source["zone"]].phrase in caption


def test_compose_caption_strips_and_uses_custom_vocabulary():
    sources = [{"caption": "  a gong sounds ", "zone": "right"},
               {"caption": "a horn honks", "zone": "centre"}]
    assert compose_caption(sources, zones=THREE) == (
        "a horn honks in the centre and a gong sounds on the right")
    with pytest.raises(KeyError):
        compose_caption(sources)  # "centre" is not a default zone


def test_compose_caption_errors():
    with pytest.raises(ValueError):
        compose_caption([{"caption": "   ", "zone": "left"}])
    with pytest.raises(ValueError):
        compose_caption([DOG, {"caption": "", "zone": "right"}])
    with pytest.raises(ValueError):
        compose_caption([])
    with pytest.raises(KeyError, match="Unknown zone"):
        compose_caption([{"caption": "a dog barks", "zone": "behind"}])
    for bad in (-1, N_PHRASINGS):
        with pytest.raises(ValueError):
            compose_caption([DOG], phrasing=bad)


# ---------------------------------------------------------------------------------
# Permuted captions (SCL hard negatives)
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sources", [[DOG], [DOG, CAR], [DOG, CAR, BELL]])
@pytest.mark.parametrize("phrasing", range(N_PHRASINGS))
def test_permuted_captions(sources, phrasing):
    zones = ZoneVocabulary.default()
    k = len(sources)
    true = compose_caption(sources, phrasing)
    permuted = permuted_captions(sources, phrasing)
    assert len(permuted) == math.factorial(k) - 1
    assert len(permuted) == {1: 0, 2: 1, 3: 5}[k]
    assert true not in permuted
    assert len(set(permuted)) == len(permuted)
    for caption in permuted:
        # Same sources and same directions, each said exactly once.
        for source in sources:
            assert caption.count(source["caption"]) == 1
            assert caption.count(zones[source["zone"]].phrase) == 1
    # Exactly the captions of every other source-to-zone assignment.
    zone_names = [s["zone"] for s in sources]
    expected = set()
    for assignment in itertools.permutations(zone_names):
        if list(assignment) != zone_names:
            expected.add(compose_caption(
                [dict(s, zone=z) for s, z in zip(sources, assignment)], phrasing))
    assert set(permuted) == expected
    # Deterministic order.
    assert permuted_captions(sources, phrasing) == permuted


@pytest.mark.parametrize("phrasing", range(N_PHRASINGS))
def test_as_given_order_keeps_the_sound_order_in_every_permutation(phrasing):
    sources = [CAR, BELL, DOG]  # right, front, left: not left to right
    true = compose_caption(sources, phrasing, order="as_given")
    assert true != compose_caption(sources, phrasing)
    assert true.index("car") < true.index("bell") < true.index("dog")
    permuted = permuted_captions(sources, phrasing, order="as_given")
    assert len(set(permuted)) == 5 and true not in permuted
    for caption in permuted:  # same sound order; only the directions moved
        assert caption.index("car") < caption.index("bell") < caption.index("dog")
    # The same scenes as the left-to-right negatives, said in another order.
    zone_names = [s["zone"] for s in sources]
    expected = {compose_caption([dict(s, zone=z) for s, z in zip(sources, a)], phrasing,
                                order="as_given")
                for a in itertools.permutations(zone_names) if list(a) != zone_names}
    assert set(permuted) == expected
    with pytest.raises(ValueError, match="order"):
        compose_caption(sources, phrasing, order="random")


def test_permuted_assignments_move_zones_not_sources():
    sources = [DOG, CAR, BELL]
    swapped = permuted_assignments(sources)
    assert len(swapped) == 5
    zone_sets = set()
    for scene in swapped:
        assert [s["caption"] for s in scene] == ["a dog barks", "a car passes",
                                                  "a bell rings"]
        assert sorted(s["zone"] for s in scene) == sorted(s["zone"] for s in sources)
        zone_sets.add(tuple(s["zone"] for s in scene))
    assert len(zone_sets) == 5 and ("left", "right", "front") not in zone_sets
    assert sources == [DOG, CAR, BELL]  # inputs untouched


def test_permuted_captions_example():
    assert permuted_captions([CAR, DOG]) == [
        "a car passes on the left and a dog barks on the right"]


# ---------------------------------------------------------------------------------
# Direction prompts
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [3, 5, 9])
def test_direction_prompts(n):
    if n == 5:
        zones = ZoneVocabulary.default()
    elif n == 3:
        zones = ZoneVocabulary(THREE)
    else:
        zones = ZoneVocabulary.uniform(NINE_NAMES, NINE_PHRASES)
    prompts = direction_prompts(zones)
    assert len(prompts) == n
    assert prompts == [f"a sound {z.phrase}" for z in zones.zones]
    assert len(set(prompts)) == n
    # A list of dicts works as well as a vocabulary.
    assert direction_prompts(zones.to_config()) == prompts


def test_direction_prompts_default_and_template():
    assert direction_prompts() == [
        "a sound on the left", "a sound on the front left", "a sound in front",
        "a sound on the front right", "a sound on the right"]
    assert direction_prompts(THREE, template="noise {direction}") == [
        "noise on the left", "noise in the centre", "noise on the right"]


def test_smallest_gap_counts_zones_between_the_closest_two_sources():
    zones = ZoneVocabulary.default()
    assert zones.smallest_gap(["left", "right"]) == 4
    assert zones.smallest_gap(["right", "front", "left"]) == 2
    assert zones.smallest_gap(["front-right", "left", "front"]) == 1
    with pytest.raises(ValueError, match="two zones"):
        zones.smallest_gap(["left"])
    with pytest.raises(KeyError, match="Unknown zone"):
        zones.smallest_gap(["left", "behind"])


# ---------------------------------------------------------------------------------
# The caption language: training and held-out parts
# ---------------------------------------------------------------------------------


def test_default_zones_have_eight_training_wordings_and_held_out_ones():
    for zone in ZoneVocabulary.default().zones:
        assert len(zone.phrases) >= 8 and len(set(zone.phrases)) == len(zone.phrases)
        assert len(zone.heldout_phrases) >= 3
        for wording in zone.phrases + zone.heldout_phrases:  # each names its direction
            assert any(map(ZoneVocabulary.default().is_direction_word, words_of(wording)))


def test_held_out_language_shares_no_wording_form_joiner_or_frame_with_training():
    zones = ZoneVocabulary.default()
    train_wordings = {p for z in zones.zones for p in z.phrases}
    for zone in zones.zones:
        for heldout in zone.heldout_phrases:
            # not one training wording, nor one inside it ("over on the left")
            assert not any(w in heldout or heldout in w for w in train_wordings), heldout
    train, heldout = ENGLISH["train"], ENGLISH["heldout"]
    for field in ("clause_forms", "joiners", "frames", "prompt_forms"):
        assert not set(getattr(train, field)) & set(getattr(heldout, field)), field


def _material_words(split):
    language, zones = ENGLISH[split], ZoneVocabulary.default().zones
    texts = [w for z in zones for w in z.wordings(split)]
    texts += list(language.clause_forms + language.frames + language.prompt_forms)
    texts += [j for pair in language.joiners for j in pair]
    return {w for text in texts for w in words_of(text.replace("{sound}", " ")
                                                  .replace("{direction}", " ")
                                                  .replace("{}", " "))}


def test_fillers_use_no_word_that_only_the_held_out_language_has():
    held_out_only = _material_words("heldout") - _material_words("train")
    assert {"whereas", "forward", "where", "clip"} <= held_out_only  # the check can fail
    filler_words = {w for filler in FILLERS for w in words_of(filler)}
    assert not filler_words & held_out_only, filler_words & held_out_only
    assert not any(ZoneVocabulary.default().is_direction_word(w) for w in filler_words)


def test_glue_fillers_wraps_pieces_at_the_given_rate():
    import random
    clauses = [["a dog barks", "on the left"], ["rain falls", "to the right"]] * 200
    glued = glue_fillers(clauses, random.Random(0), 0.3)
    changed = [(a, b) for row, out in zip(clauses, glued) for a, b in zip(row, out) if a != b]
    assert 0.25 < len(changed) / 800 < 0.35
    for piece, wrapped in changed:  # the piece itself, a filler on one side
        assert any(wrapped in (f"{f} {piece}", f"{piece} {f}") for f in FILLERS)
    assert glue_fillers(clauses, random.Random(0), 0.0) == clauses


def test_each_piece_is_glued_in_few_ways_and_every_filler_is_used():
    import random
    pieces = [f"sound number {i}" for i in range(300)]
    ways = {piece: set() for piece in pieces}
    for seed in range(40):
        for (piece,), (out,) in zip([[p] for p in pieces],
                                    glue_fillers([[p] for p in pieces], random.Random(seed), 1.0)):
            ways[piece].add(out)
    assert {len(w) for w in ways.values()} == {FILLER_WAYS_PER_PIECE}
    used = {f for piece, outs in ways.items() for out in outs for f in FILLERS
            if out in (f"{f} {piece}", f"{piece} {f}")}
    assert used == set(FILLERS)
    for limit in (3, None):
        glued = glue_fillers([["a dog barks"]] * 400, random.Random(0), 1.0,
                             ways_per_piece=limit)
        assert len({out for (out,) in glued}) == (limit or 2 * len(FILLERS))


def test_the_default_vocabulary_is_the_zone_file_of_the_recipes():
    from pathlib import Path
    zone_file = Path(__file__).parents[1] / "hparams" / "zones.yaml"
    assert ZoneVocabulary.default().to_config() == \
        ZoneVocabulary(yaml.safe_load(zone_file.read_text())).to_config()
    assert ZoneVocabulary.from_config(None).names == DEFAULT_NAMES


@pytest.mark.parametrize("split", ["train", "heldout"])
@pytest.mark.parametrize("sources", [[DOG], [DOG, CAR], [DOG, CAR, BELL]])
def test_scene_captions_and_negatives_differ_in_the_assignment_alone(split, sources):
    zones = ZoneVocabulary.default()
    rng = np.random.default_rng(0)
    captions, permuted = scene_captions(sources, rng, zones, split, count=20)
    assert len(captions) == len(permuted) == 20
    assert len(set(captions)) > 10  # varied language, not one template
    allowed = {z.name: set(z.wordings(split)) for z in zones.zones}
    for caption, negatives in zip(captions, permuted):
        assert len(negatives) == math.factorial(len(sources)) - 1
        assert caption not in negatives and len(set(negatives)) == len(negatives)
        for source in sources:  # (the first letter may be a capital)
            assert source["caption"] in caption.lower()
            assert any(w in caption.lower() for w in allowed[source["zone"]])
        for negative in negatives:
            # the same words, in another assignment
            assert sorted(words_of(negative)) == sorted(words_of(caption))


def test_scene_captions_are_fixed_by_the_seed_and_templates_come_in_turn():
    draw = [scene_captions([DOG, CAR], np.random.default_rng(3), count=4)
            for _ in range(2)]
    assert draw[0] == draw[1]
    captions, permuted = scene_captions([DOG, CAR], None, split="template", count=3)
    assert captions == [compose_caption([DOG, CAR], p) for p in range(3)]
    assert permuted == [permuted_captions([DOG, CAR], p) for p in range(3)]


def test_held_out_direction_prompts_use_held_out_words_only():
    zones = ZoneVocabulary.default()
    sets = direction_prompt_sets(zones, "heldout")
    assert len(sets) == 5
    for zone, prompts in zip(zones.zones, sets):
        assert len(prompts) == len(ENGLISH["heldout"].prompt_forms) * len(
            zone.heldout_phrases)
    training_wordings = [p for zone in zones.zones for p in zone.phrases]
    for prompts in sets:
        for prompt in prompts:
            assert not any(f" {w} " in f" {prompt} " for w in training_wordings), prompt
            assert not prompt.startswith(ENGLISH["train"].prompt_forms[0].split("{")[0])
    assert direction_prompt_sets(zones) == [[p] for p in direction_prompts(zones)]
    drawn = random_direction_prompts(np.random.default_rng(1), zones)
    assert len(drawn) == 5 and all(
        any(w in prompt for w in zone.phrases) for zone, prompt in zip(zones.zones, drawn))


def test_a_vocabulary_without_held_out_wordings_says_so():
    with pytest.raises(ValueError, match="no held-out wordings"):
        scene_captions([{"caption": "a", "zone": "left"}], np.random.default_rng(0),
                       THREE, "heldout")


def test_old_single_phrase_vocabularies_still_load():
    zones = ZoneVocabulary(THREE)
    assert zones["centre"].phrases == ("in the centre",)
    assert zones.direction_words == {"left", "centre", "right"}


# ---------------------------------------------------------------------------------
# Clauses of a caption
# ---------------------------------------------------------------------------------

CAMPFIRE = {"caption": "a campfire pops and crackles", "zone": "front-left"}
STREET = {"caption": "a car passes in front of the house", "zone": "front-right"}


@pytest.mark.parametrize("phrasing", range(N_PHRASINGS))
@pytest.mark.parametrize("order", ["left_to_right", "as_given"])
@pytest.mark.parametrize("sources", [[DOG], [CAR, CAMPFIRE], [STREET, DOG, BELL],
                                     [CAMPFIRE, STREET, CAR]])
def test_caption_clauses_invert_compose_caption(sources, phrasing, order):
    """Every template caption splits into the one-source captions of its sources, even
    when a sound's own words hold "and" or a zone phrase ("in front of the house")."""
    zones = ZoneVocabulary.default()
    mentioned = (sources if order == "as_given"
                 else sorted(sources, key=lambda s: zones.index(s["zone"])))
    caption = compose_caption(sources, phrasing, order=order)
    assert caption_clauses(caption) == [compose_caption([s], phrasing) for s in mentioned]


def _generated_scenes(zones, split, seed, n_scenes):
    """``(sources, style)`` of 2- and 3-source scenes of the built-in sounds, each in a
    style drawn from a language split (sources named in the order given)."""
    from spatial_clap_sb.data.synthesis import GENERATED_CLASSES

    sounds = list(GENERATED_CLASSES.values())
    rng = np.random.default_rng(seed)
    for scene in range(n_scenes):
        k = 2 + scene % 2
        picked = rng.choice(len(sounds), k, replace=False)
        sources = [{"caption": sounds[i][int(rng.integers(3))], "zone": zones.names[z]}
                   for i, z in zip(picked, rng.choice(5, k, replace=False))]
        yield sources, dataclasses.replace(draw_style(rng, zones, split),
                                           order="as_given")


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_caption_clauses_bind_every_sound_to_its_own_direction(split):
    """Generated captions of 2 and 3 sources and their permuted negatives, in either
    language: one clause per source, holding that source's sound and its own clause
    ("off to the left, a dog barks"), not the sound with a neighbour's direction."""
    zones = ZoneVocabulary.default()
    found = total = 0
    for sources, style in _generated_scenes(zones, split, seed=11, n_scenes=400):
        k = len(sources)
        for mentioned in [sources] + permuted_assignments(sources):
            clauses = [c.lower() for c in caption_clauses(compose(mentioned, style, zones),
                                                           zones)]
            own = [source_clause(s, style, zones) for s in mentioned]
            total += 1
            found += len(clauses) == k and all(
                sum(s["caption"] in clause for clause in clauses) == 1
                and any(s["caption"] in clause and text in clause for clause in clauses)
                for s, text in zip(mentioned, own))
    assert found / total >= 0.995, found / total


@pytest.mark.parametrize("caption, expected", [
    ("To the left a dog barks, whereas a car passes off to the right.",
     ["To the left a dog barks", "a car passes off to the right"]),
    ("a dog barks ahead and to the left and rain falls on the right side",
     ["a dog barks ahead and to the left", "rain falls on the right side"]),
    ("off to the left, a campfire pops and crackles; on the right, a dog barks",
     ["off to the left, a campfire pops and crackles", "on the right, a dog barks"]),
    ("A dog barks leftward - a bell rings at the right front",
     ["A dog barks leftward", "a bell rings at the right front"]),
    ("rain falls, to the left, and a dog barks, to the right",
     ["rain falls, to the left", "a dog barks, to the right"]),
    # A sound-first and a direction-first clause in one caption.
    ("On the left, a baby cries. A vacuum cleaner hums in the middle.",
     ["On the left, a baby cries", "A vacuum cleaner hums in the middle"]),
    # Direction first with a two-part sound and a frame the finder does not know.
    ("In this clip, to the left, a campfire pops and crackles, and ahead and to the "
     "right, a dog barks", ["In this clip, to the left, a campfire pops and crackles",
                           "ahead and to the right, a dog barks"]),
    # A direction word inside a sound ("in front of the house"), direction first.
    ("on the left, a car passes in front of the house; to the right, rain falls",
     ["on the left, a car passes in front of the house", "to the right, rain falls"]),
    ("birds sing straight ahead, traffic hums on the left and a dog barks on the right",
     ["birds sing straight ahead", "traffic hums on the left", "a dog barks on the right"]),
])
def test_caption_clauses_of_typed_captions(caption, expected):
    assert caption_clauses(caption) == expected


@pytest.mark.parametrize("caption", [
    "a car passes in front of the house",        # a zone phrase inside the sound
    "a dog barks on the left and on the right",   # the second part has no sound
    "a dog barks on the left and a car passes",   # the second sound has no direction
    "a sound on the left.",                       # a direction prompt
    "rain falls steadily on a tin roof",          # free text
])
def test_captions_without_two_sourced_clauses_stay_whole(caption):
    assert caption_clauses(caption) == [caption]


def test_caption_clauses_with_a_custom_vocabulary_and_free_punctuation():
    zones = ZoneVocabulary.uniform(NINE_NAMES, NINE_PHRASES)
    assert caption_clauses("A dog barks in sector 1, and rain falls in sector 7.",
                           zones) == ["A dog barks in sector 1", "rain falls in sector 7"]
    # The default vocabulary knows no sectors: one clause.
    assert len(caption_clauses("a dog barks in sector 1 and rain falls in sector 7")) == 1



@pytest.mark.parametrize("caption, expected", [
    ("a dog barks off to the left and rain falls on the right-hand side",
     [["a dog barks", "off to the left"], ["rain falls", "on the right-hand side"]]),
    ("Off to the left a dog barks, and straight ahead rain falls.",
     [["Off to the left", "a dog barks"], ["straight ahead", "rain falls"]]),
    ("a dog barks somewhere to the left; rain falls, to the right",
     [["a dog barks", "somewhere", "to the left"], ["rain falls", "to the right"]]),
    # A frame's words are a piece of the clause after them.
    ("Listen: a dog barks off to the left and rain falls to the right",
     [["Listen", "a dog barks", "off to the left"], ["rain falls", "to the right"]]),
    # A word the vocabulary does not know right before a direction word may modify it.
    ("a dog barks barely left and rain falls to the right",
     [["a dog barks barely left"], ["rain falls", "to the right"]]),
    # One source and a direction prompt are cut too; free text stays whole.
    ("A dog barks to the left.", [["A dog barks", "to the left"]]),
    ("a sound on the front left", [["a sound", "on the front left"]]),
    ("rain falls on a tin roof", [["rain falls on a tin roof"]]),
])
def test_split_roles_reads_a_sound_apart_from_its_direction(caption, expected):
    assert caption_clause_pieces(caption, split_roles=True) == expected


def _content_words(pieces):
    """The words of a clause's pieces but a frame's (kept as pieces with split_roles)."""
    return [w for w in words_of(" ".join(pieces)) if w not in FRAME_WORDS]


def _words_but_and(text):
    """A text's words without "and", at which the clause finder cuts a sound."""
    return " ".join(w for w in words_of(text) if w != "and")


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_split_roles_keeps_every_sound_with_its_own_direction(split):
    """Cutting pieces into sound and direction moves no word between clauses and
    leaves one source's sound in each clause; in most clauses no direction piece holds
    a word of the sound (not all: "a bell rings twice rightward" has no word between
    the sound and the direction and stays whole)."""
    zones = ZoneVocabulary.default()
    alone = clauses = 0
    for sources, style in _generated_scenes(zones, split, seed=12, n_scenes=200):
        caption = compose(sources, style, zones)
        whole = caption_clause_pieces(caption, zones)
        cut = caption_clause_pieces(caption, zones, split_roles=True)
        assert [_content_words(c) for c in cut] == [_content_words(c) for c in whole], \
            caption
        for clause in cut:
            pieces = [_words_but_and(piece) for piece in clause]
            own = [s["caption"] for s in sources
                   if _words_but_and(s["caption"]) in " ".join(pieces)]
            assert len(own) == 1, (caption, clause)
            sound = set(words_of(own[0])) - {"a", "an", "the", "on", "and", "of", "in"}
            alone += not any(sound & set(words_of(piece)) for piece in clause
                             if any(map(zones.is_direction_word, words_of(piece))))
            clauses += 1
    assert alone / clauses > 0.8, alone / clauses
