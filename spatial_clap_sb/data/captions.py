"""Zone vocabulary and spatial captions.

A stereo pair only hears the frontal half-plane, so a direction is an azimuth from -90
(left) to +90 (right). The half-plane is divided into named *zones*; the vocabulary is
data (a list of dicts in a YAML file, say), not code, so a user can choose three zones or
nine. Scene captions are composed from the sources' own captions and zones with a
deterministic rule: sources are mentioned from left to right.

Example
-------
>>> zones = ZoneVocabulary.default()
>>> zones.names
['left', 'front-left', 'front', 'front-right', 'right']
>>> sources = [{"caption": "a car passes", "zone": "right"},
...            {"caption": "a dog barks", "zone": "left"}]
>>> compose_caption(sources)
'a dog barks on the left and a car passes on the right'
>>> permuted_captions(sources)
['a car passes on the left and a dog barks on the right']
"""
import itertools
import re
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Zone:
    """A named azimuth interval of the frontal half-plane.

    Arguments
    ---------
    name : str
        Short identifier, e.g. ``"front-left"``.
    low, high : float
        Azimuth interval in degrees (-90 left, +90 right), ``low < high``.
    phrase : str
        How a caption says it, e.g. ``"on the front left"``.
    """

    name: str
    low: float
    high: float
    phrase: str

    @property
    def centre(self):
        """Azimuth in the middle of the zone (degrees)."""
        return 0.5 * (self.low + self.high)


_DEFAULT_ZONES = (
    ("left", "on the left"),
    ("front-left", "on the front left"),
    ("front", "in front"),
    ("front-right", "on the front right"),
    ("right", "on the right"),
)

# Direction-only captions: the training signal that names a direction on its own,
# and the prompts of zero-shot direction classification (first template).
DIRECTION_TEMPLATES = (
    "a sound {phrase}",
    "something is heard {phrase}",
    "a sound source {phrase}",
)


class ZoneVocabulary:
    """An ordered list of zones tiling the frontal half-plane.

    Arguments
    ---------
    zones : list of Zone or dict
        Zones from left to right; dicts need ``name``, ``low``, ``high`` and ``phrase``.

    Example
    -------
    >>> zones = ZoneVocabulary([
    ...     {"name": "left", "low": -90, "high": -30, "phrase": "on the left"},
    ...     {"name": "centre", "low": -30, "high": 30, "phrase": "in the centre"},
    ...     {"name": "right", "low": 30, "high": 90, "phrase": "on the right"}])
    >>> zones.zone_of(-45.0).name
    'left'
    """

    def __init__(self, zones):
        self.zones = [z if isinstance(z, Zone) else Zone(**z) for z in zones]
        if not self.zones:
            raise ValueError("A zone vocabulary needs at least one zone.")
        names = [z.name for z in self.zones]
        if len(set(names)) != len(names):
            raise ValueError(f"Zone names must be unique, got {names}.")
        for left, right in zip(self.zones, self.zones[1:]):
            if left.high > right.low + 1e-9:
                raise ValueError(
                    f"Zones must be ordered left to right without overlap: "
                    f"{left.name} ends at {left.high}, {right.name} starts at {right.low}."
                )
        for zone in self.zones:
            if not -90 <= zone.low < zone.high <= 90:
                raise ValueError(
                    f"Zone {zone.name} [{zone.low}, {zone.high}] must lie inside "
                    "the frontal half-plane [-90, 90] with low < high."
                )
        self._index = {z.name: i for i, z in enumerate(self.zones)}

    @classmethod
    def default(cls):
        """The default five equal zones: left, front-left, front, front-right, right."""
        return cls.uniform([name for name, _ in _DEFAULT_ZONES],
                           [phrase for _, phrase in _DEFAULT_ZONES])

    @classmethod
    def uniform(cls, names, phrases):
        """Zones of equal width across [-90, 90], named from left to right.

        Arguments
        ---------
        names : list of str
            Zone names, left to right.
        phrases : list of str
            Caption phrases, e.g. ``"on the left"``.

        Returns
        -------
        ZoneVocabulary
        """
        edges = np.linspace(-90.0, 90.0, len(names) + 1)
        return cls([
            Zone(name, float(lo), float(hi), phrase)
            for name, phrase, lo, hi in zip(names, phrases, edges[:-1], edges[1:])
        ])

    @classmethod
    def from_config(cls, config):
        """Builds a vocabulary from ``None`` (default), a vocabulary, or a list of dicts."""
        if config is None:
            return cls.default()
        if isinstance(config, ZoneVocabulary):
            return config
        return cls(config)

    def to_config(self):
        """Returns the list of dicts that rebuilds this vocabulary."""
        return [dict(name=z.name, low=z.low, high=z.high, phrase=z.phrase)
                for z in self.zones]

    @property
    def names(self):
        """Zone names, left to right."""
        return [z.name for z in self.zones]

    def __len__(self):
        return len(self.zones)

    def __getitem__(self, name):
        return self.zones[self.index(name)]

    def index(self, name):
        """Position of a zone (0 = leftmost)."""
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"Unknown zone {name!r}; known zones: {self.names}") from None

    def smallest_gap(self, zone_names):
        """Smallest distance, in zones, between two of the given zones (1 = adjacent).

        Example
        -------
        >>> ZoneVocabulary.default().smallest_gap(["right", "left", "front-left"])
        1
        """
        positions = sorted(self.index(name) for name in zone_names)
        if len(positions) < 2:
            raise ValueError(f"A gap needs two zones or more, got {list(zone_names)}.")
        return min(b - a for a, b in zip(positions, positions[1:]))

    def zone_of(self, azimuth):
        """The zone that contains an azimuth in degrees."""
        for zone in self.zones:
            if zone.low <= azimuth <= zone.high:
                return zone
        raise ValueError(f"Azimuth {azimuth} lies in no zone of {self.names}.")


# Sentence forms of a scene caption: how one source is said, and how the sources are
# joined (the last separator between the last two). Phrasing 0 is the fixed default.
SCENE_PHRASINGS = (
    ("{caption} {zone}", ", ", " and "),
    ("{caption} {zone}", ", ", " while "),
    ("{zone}, {caption}", "; ", "; "),
)
N_PHRASINGS = len(SCENE_PHRASINGS)


MENTION_ORDERS = ("left_to_right", "as_given")


def compose_caption(sources, phrasing=0, zones=None, order="left_to_right"):
    """Composes a scene caption from its sources, mentioned from left to right.

    Arguments
    ---------
    sources : list of dict
        Each with ``caption`` (e.g. ``"a dog barks"``) and ``zone`` (a zone name), as the
        sources stand in a manifest entry.
    phrasing : int
        Which of the ``N_PHRASINGS`` sentence forms to use (0 is the fixed default).
    zones : ZoneVocabulary or list of dict, optional
        The zone vocabulary (default: five zones).
    order : str
        ``"left_to_right"`` (the rule of every stored caption) or ``"as_given"``: the
        sources in list order, a training augmentation under which the first-mentioned
        sound no longer tells where it is (see :func:`shuffled_mentions`).

    Returns
    -------
    str
        The scene caption.

    Example
    -------
    >>> compose_caption([{"caption": "a bell rings", "zone": "front"}], phrasing=2)
    'in front, a bell rings'
    >>> compose_caption([{"caption": "a car passes", "zone": "right"},
    ...                  {"caption": "a dog barks", "zone": "left"}], order="as_given")
    'a car passes on the right and a dog barks on the left'
    """
    zones = ZoneVocabulary.from_config(zones)
    if not sources:
        raise ValueError("A scene caption needs at least one source.")
    if not 0 <= phrasing < N_PHRASINGS:
        raise ValueError(f"phrasing must be in [0, {N_PHRASINGS}), got {phrasing}.")
    if order not in MENTION_ORDERS:
        raise ValueError(f"order must be one of {MENTION_ORDERS}, got {order!r}.")
    part_form, separator, last_separator = SCENE_PHRASINGS[phrasing]
    if order == "left_to_right":
        sources = sorted(sources, key=lambda s: zones.index(s["zone"]))
    parts = []
    for source in sources:
        caption = str(source["caption"]).strip()
        if not caption:
            raise ValueError(f"Source {source} has an empty caption.")
        parts.append(part_form.format(caption=caption, zone=zones[source["zone"]].phrase))
    if len(parts) == 1:
        return parts[0]
    return separator.join(parts[:-1]) + last_separator + parts[-1]


def caption_clauses(caption, zones=None):
    """Splits a scene caption into its "sound + direction" clauses.

    The inverse of :func:`compose_caption`, read from the string alone, so that it works
    on any caption a user types: a clause ends at a zone phrase that closes it (followed
    by a separator of :data:`SCENE_PHRASINGS` or the end), or, in the zone-first
    phrasing, starts at a zone phrase followed by a comma. A zone phrase inside a sound's
    own words ("a car passes in front of the house") is no cut, and a fragment without
    a sound of its own is merged into its neighbour. A caption without that structure
    (free text, a direction prompt, one source) is one clause.

    Arguments
    ---------
    caption : str
    zones : ZoneVocabulary or list of dict, optional
        The zone vocabulary whose phrases anchor the clauses.

    Returns
    -------
    list of str
        The clauses in the order the caption mentions them (at least one).

    Example
    -------
    >>> for clause in caption_clauses("a dog barks on the left, a bell rings in front "
    ...                               "and a campfire pops and crackles on the right"):
    ...     print(clause)
    a dog barks on the left
    a bell rings in front
    a campfire pops and crackles on the right
    >>> caption_clauses("on the left, a dog barks; in front, a bell rings")
    ['on the left, a dog barks', 'in front, a bell rings']
    >>> caption_clauses("a car passes in front of the house")
    ['a car passes in front of the house']
    """
    grammar = _ClauseGrammar.of(ZoneVocabulary.from_config(zones))
    text = caption.strip()
    if grammar.zone_first.match(text):
        cuts = [m.start("zone") for m in grammar.zone_first.finditer(text)][1:]
    else:
        cuts = [m.end() for m in grammar.zone_last.finditer(text)][:-1]
    spans = []
    for start, end in zip([0] + cuts, cuts + [len(text)]):
        if spans and not grammar.has_sound(text[start:end]):
            spans[-1] = (spans[-1][0], end)  # a fragment without a sound of its own
        else:
            spans.append((start, end))
    if len(spans) == 1:
        return [text]
    return [grammar.strip_separators(text[start:end]) for start, end in spans]


class _ClauseGrammar:
    """Regular expressions of the caption grammar for one zone vocabulary (cached)."""

    _cache = {}

    def __init__(self, zones):
        phrases = sorted({re.escape(z.phrase) for z in zones.zones}, key=len, reverse=True)
        joins = {join for _, between, last in SCENE_PHRASINGS for join in (between, last)}
        escaped_joins = sorted(map(re.escape, joins), key=len, reverse=True)
        zone = "(?:" + "|".join(phrases) + ")"
        separator = "(?:" + "|".join(escaped_joins) + ")"
        words = "|".join(rf"\b{re.escape(word)}\b" if word.isalnum() else re.escape(word)
                         for word in sorted({join.strip() for join in joins}))
        flags = re.IGNORECASE
        # "<sound> <zone>" closed by a separator or the end ("a dog barks on the left, ...")
        self.zone_last = re.compile(rf"\b{zone}(?={separator}|\s*[.!]?\s*$)", flags)
        # "<zone>, <sound>" at the start or after a separator ("on the left, a dog barks")
        self.zone_first = re.compile(rf"(?:^|{separator})(?P<zone>{zone}),", flags)
        self._edges = re.compile(rf"^(?:\s|{words})+|[\s,;.!]+$", flags)
        self._zone = re.compile(rf"\b{zone}\b", flags)

    @classmethod
    def of(cls, zones):
        key = tuple((z.name, z.phrase) for z in zones.zones)
        if key not in cls._cache:
            cls._cache[key] = cls(zones)
        return cls._cache[key]

    def strip_separators(self, piece):
        """The piece without the separators and punctuation around it."""
        return self._edges.sub("", piece)

    def has_sound(self, piece):
        """Whether the piece says more than a zone phrase and separators."""
        return bool(self.strip_separators(self._zone.sub("", piece)))


def permuted_captions(sources, phrasing=0, zones=None, order="left_to_right"):
    """Captions of every non-identity permutation of the zone assignment.

    These are the hard negatives of spatial contrastive learning: the same sources, the
    same set of directions, but the wrong source in each direction (k! - 1 captions for
    k sources: none for one source, 1 for two, 5 for three).

    Arguments
    ---------
    sources : list of dict
        Each with ``caption`` and ``zone``.
    phrasing : int
        Sentence form, as in :func:`compose_caption`.
    zones : ZoneVocabulary or list of dict, optional
        The zone vocabulary.
    order : str
        Mention order, as in :func:`compose_caption`. With ``"as_given"`` every
        permuted caption names the sounds in the same order as the true one, and only
        which direction follows which sound differs.

    Returns
    -------
    list of str
        In a fixed order (lexicographic over permutations).
    """
    return [compose_caption(swapped, phrasing, zones, order)
            for swapped in permuted_assignments(sources)]


def permuted_assignments(sources):
    """The scene's sources under every other source-to-zone assignment.

    Arguments
    ---------
    sources : list of dict
        Each with a ``zone``.

    Returns
    -------
    list of list of dict
        ``k! - 1`` copies of ``sources`` (same order) with the zones permuted, in
        lexicographic order of the permutations.

    Example
    -------
    >>> permuted_assignments([{"caption": "a", "zone": "left"},
    ...                       {"caption": "b", "zone": "right"}])
    [[{'caption': 'a', 'zone': 'right'}, {'caption': 'b', 'zone': 'left'}]]
    """
    zone_names = [s["zone"] for s in sources]
    identity = tuple(range(len(sources)))
    return [[dict(s, zone=zone_names[j]) for s, j in zip(sources, assignment)]
            for assignment in itertools.permutations(identity) if assignment != identity]


def shuffled_mentions(sources, rng):
    """The sources in a random mention order (a training-caption augmentation).

    Stored captions mention sounds from left to right, so in a two-source caption the
    first-mentioned sound is always the left one: a tower can tell a caption from its
    permuted twin by which sound comes first, a shortcut that does not carry over to
    three sources. Captions composed with ``order="as_given"`` from shuffled sources
    leave only the pairing of each sound with its own direction phrase.

    Arguments
    ---------
    sources : list of dict
    rng : random.Random

    Returns
    -------
    list of dict
        A shuffled copy (the input is not changed).
    """
    return rng.sample(list(sources), len(sources))


def moved_captions(sources, phrasing=0, zones=None):
    """Captions of a one-source scene with the source moved to every other zone.

    Hard negatives that differ from the true caption in the direction alone (4 for the
    five default zones); they make the text side encode where a named sound is.

    Arguments
    ---------
    sources : list of dict
        Exactly one source, with ``caption`` and ``zone``.
    phrasing : int
    zones : ZoneVocabulary or list of dict, optional

    Returns
    -------
    list of str

    Example
    -------
    >>> moved_captions([{"caption": "a bell rings", "zone": "left"}])[0]
    'a bell rings on the front left'
    """
    zones = ZoneVocabulary.from_config(zones)
    if len(sources) != 1:
        raise ValueError(f"moved_captions takes one source, got {len(sources)}.")
    return [compose_caption([dict(sources[0], zone=name)], phrasing, zones)
            for name in zones.names if name != sources[0]["zone"]]


def direction_prompts(zones=None, template=DIRECTION_TEMPLATES[0]):
    """Direction-only prompts for zero-shot direction classification.

    Arguments
    ---------
    zones : ZoneVocabulary or list of dict, optional
        The zone vocabulary.
    template : str
        A template with a ``{phrase}`` field.

    Returns
    -------
    list of str
        One prompt per zone, left to right.

    Example
    -------
    >>> direction_prompts()[0]
    'a sound on the left'
    """
    zones = ZoneVocabulary.from_config(zones)
    return [template.format(phrase=z.phrase) for z in zones.zones]
