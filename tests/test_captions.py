"""Tests of the zone vocabulary and spatial captions (spatial_clap_sb.data.captions)."""

import itertools
import math

import pytest

from spatial_clap_sb.data.captions import (
    DIRECTION_TEMPLATES,
    N_PHRASINGS,
    Zone,
    ZoneVocabulary,
    caption_clauses,
    compose_caption,
    direction_prompts,
    permuted_assignments,
    permuted_captions,
    shuffled_mentions,
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


def test_shuffled_mentions_is_a_permutation_and_leaves_the_input_alone():
    import random
    sources = [DOG, CAR, BELL]
    orders = {tuple(s["caption"] for s in shuffled_mentions(sources, random.Random(i)))
              for i in range(40)}
    assert len(orders) == 6  # every order of three sounds turns up
    assert all(sorted(o) == sorted(s["caption"] for s in sources) for o in orders)
    assert sources == [DOG, CAR, BELL]


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
    assert prompts == [DIRECTION_TEMPLATES[0].format(phrase=z.phrase)
                       for z in zones.zones]
    assert len(set(prompts)) == n
    # A list of dicts works as well as a vocabulary.
    assert direction_prompts(zones.to_config()) == prompts


def test_direction_prompts_default_and_template():
    assert direction_prompts() == [
        "a sound on the left", "a sound on the front left", "a sound in front",
        "a sound on the front right", "a sound on the right"]
    assert direction_prompts(THREE, template="noise {phrase}") == [
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
# Clauses of a caption
# ---------------------------------------------------------------------------------

CAMPFIRE = {"caption": "a campfire pops and crackles", "zone": "front-left"}
STREET = {"caption": "a car passes in front of the house", "zone": "front-right"}


@pytest.mark.parametrize("phrasing", range(N_PHRASINGS))
@pytest.mark.parametrize("order", ["left_to_right", "as_given"])
@pytest.mark.parametrize("sources", [[DOG], [CAR, CAMPFIRE], [STREET, DOG, BELL],
                                     [CAMPFIRE, STREET, CAR]])
def test_caption_clauses_invert_compose_caption(sources, phrasing, order):
    """Every composed caption splits into the one-source captions of its sources, even
    when a sound's own words hold "and" or a zone phrase ("in front of the house")."""
    zones = ZoneVocabulary.default()
    mentioned = (sources if order == "as_given"
                 else sorted(sources, key=lambda s: zones.index(s["zone"])))
    caption = compose_caption(sources, phrasing, order=order)
    assert caption_clauses(caption) == [compose_caption([s], phrasing) for s in mentioned]


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
