"""Zone vocabulary and the caption language of spatial scenes.

A stereo pair only hears the frontal half-plane, so a direction is an azimuth from -90
(left) to +90 (right). The half-plane is divided into named *zones*; the vocabulary is
data (a list of dicts in a YAML file, say), not code, so a user can choose three zones or
nine, and each zone owns the wordings that say it ("on the left", "off to the left",
"on the listener's left", ...): a vocabulary in another language brings its own.

Scene captions are language, not one template. :class:`CaptionLanguage` lists the
sentence material (clause forms, joiners, frames, direction-prompt forms);
:data:`ENGLISH` holds two disjoint sets of it, ``"train"`` and ``"heldout"``, and every
zone has training wordings (``phrases``) and held-out ones (``heldout_phrases``).
Training captions only ever use the training set; test captions in held-out language
only the held-out set, so that "understands directions" is measured on words and
forms the model never read. The ``"template"`` language is the fixed original phrasing
(``compose_caption``), reported beside the held-out one.

A :class:`CaptionStyle` fixes every choice of one caption (form, joiners, frame,
wording of each zone, mention order). The hard negatives of spatial contrastive
learning are the same style with the sources' directions permuted, so they differ from
the caption in the assignment alone.

:func:`caption_clauses` splits any caption, typed by a person or generated, into its
"sound + direction" clauses without knowing its wordings: it cuts at punctuation and
joiner words and groups the pieces around the direction words of the vocabulary, sound
first or direction first, whichever reading leaves no sound without its direction.

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
>>> caption_clauses("To the left a dog barks, whereas a car passes off to the right.")
['To the left a dog barks', 'a car passes off to the right']
"""
import dataclasses
import functools
import importlib.resources
import itertools
import random
import re
import zlib
from dataclasses import dataclass, field

import numpy as np
import yaml


@dataclass(frozen=True)
class Zone:
    """A named azimuth interval of the frontal half-plane and the wordings that say it.

    Arguments
    ---------
    name : str
        Short identifier, e.g. ``"front-left"``.
    low, high : float
        Azimuth interval in degrees (-90 left, +90 right), ``low < high``.
    phrases : tuple of str
        Training wordings, e.g. ``("on the front left", "slightly to the left")``; the
        first is the template wording. A single string is one wording.
    heldout_phrases : tuple of str
        Wordings that training never uses (the held-out language test); may be empty.
    direction_words : tuple of str
        The words of its wordings that name the direction ("left" in "off to the
        left"), which :func:`caption_clauses` anchors clauses on; a word's stem counts
        too ("leftward"). Default: every word of ``phrases`` but function words.
    """

    name: str
    low: float
    high: float
    phrases: tuple
    heldout_phrases: tuple = ()
    direction_words: tuple = ()

    def __post_init__(self):
        for key in ("phrases", "heldout_phrases", "direction_words"):
            value = getattr(self, key)
            object.__setattr__(self, key, (value,) if isinstance(value, str)
                               else tuple(value))
        if not self.phrases or not all(p.strip() for p in self.phrases):
            raise ValueError(f"Zone {self.name} needs at least one non-empty wording.")
        shared = set(self.phrases) & set(self.heldout_phrases)
        if shared:
            raise ValueError(f"Zone {self.name}: wordings {sorted(shared)} are both "
                             "training and held-out wordings.")

    @property
    def phrase(self):
        """The template wording (the first training wording)."""
        return self.phrases[0]

    @property
    def anchor_words(self):
        """The direction words, given or derived from the training wordings."""
        if self.direction_words:
            return frozenset(w.lower() for w in self.direction_words)
        return frozenset(w for p in self.phrases for w in words_of(p)) - FUNCTION_WORDS

    @property
    def centre(self):
        """Azimuth in the middle of the zone (degrees)."""
        return 0.5 * (self.low + self.high)

    def wordings(self, split="train"):
        """The zone's wordings of a language split (``train`` or ``heldout``)."""
        if split == "train":
            return self.phrases
        if split == "heldout":
            if not self.heldout_phrases:
                raise ValueError(f"Zone {self.name} has no held-out wordings.")
            return self.heldout_phrases
        raise ValueError(f"Unknown language split {split!r}; use 'train' or 'heldout'.")

# The default vocabulary lives in one place, the zone file hparams/zones.yaml, which
# setup.py installs as the package resource spatial_clap_sb.hparams/zones.yaml.
DEFAULT_ZONES_RESOURCE = ("spatial_clap_sb.hparams", "zones.yaml")
# Articles, prepositions and the plainest joiner: never a sound's content on their own.
FUNCTION_WORDS = frozenset(("a", "an", "the", "to", "of", "on", "in", "at", "from", "by",
                            "and"))


class ZoneVocabulary:
    """An ordered list of zones tiling the frontal half-plane, with their wordings.

    Arguments
    ---------
    zones : list of Zone or dict
        Zones from left to right; dicts need ``name``, ``low``, ``high`` and ``phrases``
        (a list of wordings, or ``phrase``: one), and may have ``heldout_phrases`` and
        ``direction_words`` (see :class:`Zone`).

    Example
    -------
    >>> zones = ZoneVocabulary([
    ...     {"name": "left", "low": -90, "high": -30, "phrases": ["on the left"]},
    ...     {"name": "centre", "low": -30, "high": 30, "phrase": "in the centre"},
    ...     {"name": "right", "low": 30, "high": 90, "phrases": ["on the right"]}])
    >>> zones.zone_of(-45.0).name
    'left'
    >>> sorted(zones.direction_words)
    ['centre', 'left', 'right']
    """

    def __init__(self, zones):
        self.zones = [z if isinstance(z, Zone) else _zone_from_dict(z) for z in zones]
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
        self.wording_words = frozenset(
            w for z in self.zones for p in z.phrases for w in words_of(p))
        self.direction_words = frozenset().union(*(z.anchor_words for z in self.zones))
        self._direction_word_cache = {}
        self._piece_kinds = {}  # piece text -> kind of each word (the clause finder)

    @classmethod
    def default(cls):
        """The default vocabulary: five equal zones (left, front-left, front,
        front-right, right) as written in the zone file ``hparams/zones.yaml``."""
        return cls(default_zone_config())

    @classmethod
    def uniform(cls, names, phrases):
        """Zones of equal width across [-90, 90], named from left to right.

        Arguments
        ---------
        names : list of str
            Zone names, left to right.
        phrases : list of str or list of list of str
            Each zone's wording(s), e.g. ``"on the left"``.

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
        return [dict(name=z.name, low=z.low, high=z.high, phrases=list(z.phrases),
                     heldout_phrases=list(z.heldout_phrases),
                     direction_words=list(z.direction_words)) for z in self.zones]

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

    def is_direction_word(self, word):
        """Whether a lower-case word names a direction (its stem does: "leftward")."""
        known = self._direction_word_cache.get(word)
        if known is None:
            known = self._direction_word_cache[word] = word in self.direction_words or any(
                len(stem) >= 4 and word.startswith(stem) for stem in self.direction_words)
        return known


def default_zone_config():
    """The zones of ``hparams/zones.yaml`` (installed with the package) as a list of dicts.

    Every ``zones=None`` of the package means this vocabulary; recipes include the same
    file, so the default zones have a single source.

    Example
    -------
    >>> [zone["name"] for zone in default_zone_config()]
    ['left', 'front-left', 'front', 'front-right', 'right']
    """
    return yaml.safe_load(_default_zone_file_text())


@functools.lru_cache(maxsize=1)
def _default_zone_file_text():
    package, name = DEFAULT_ZONES_RESOURCE
    return importlib.resources.files(package).joinpath(name).read_text(encoding="utf-8")


def _zone_from_dict(config):
    config = dict(config)
    if "phrase" in config:  # one wording (vocabularies written before wording lists)
        config.setdefault("phrases", (config.pop("phrase"),))
    return Zone(**config)


_WORD = re.compile(r"[0-9a-z']+")


def words_of(text):
    """Lower-case words of a text (hyphens and punctuation separate words).

    Example
    -------
    >>> words_of("On the left-hand side, a dog barks.")
    ['on', 'the', 'left', 'hand', 'side', 'a', 'dog', 'barks']
    """
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class CaptionLanguage:
    """The sentence material of scene captions (one split of a language).

    Arguments
    ---------
    clause_forms : tuple of str
        How one source is said, with ``{sound}`` (the source's caption, "a dog barks")
        and ``{direction}`` (a zone wording, "off to the left").
    joiners : tuple of (str, str)
        ``(between, last)``: what separates the clauses, and the last two.
    frames : tuple of str
        Sentences around the whole scene, with ``{}``.
    prompt_forms : tuple of str
        Direction-only captions (zero-shot direction prompts), with ``{direction}``.
    """

    clause_forms: tuple
    joiners: tuple
    frames: tuple
    prompt_forms: tuple


# The template: the fixed original phrasings (sound first, left to right, the first
# wording of each zone) and the first prompt form. ``compose_caption(..., phrasing=i)``.
TEMPLATE_PHRASINGS = (
    ("{sound} {direction}", ", ", " and "),
    ("{sound} {direction}", ", ", " while "),
    ("{direction}, {sound}", "; ", "; "),
)
N_PHRASINGS = len(TEMPLATE_PHRASINGS)

# English in two disjoint parts: training captions use "train" only, held-out test
# captions "heldout" only (with the zones' held-out wordings). The template's forms,
# joiners and prompt form are part of "train".
ENGLISH = {
    "train": CaptionLanguage(
        clause_forms=("{sound} {direction}", "{direction}, {sound}", "{sound}, {direction}",
                      "{direction} {sound}", "{sound} somewhere {direction}"),
        joiners=((", ", " and "), (", ", " while "), ("; ", "; "), (", ", ", and "),
                 (" and ", " and "), (". ", ". ")),
        frames=("{}", "{}.", "in this recording, {}.", "here {}.", "listen: {}",
                "the scene: {}"),
        prompt_forms=("a sound {direction}", "something is heard {direction}",
                      "a sound source {direction}", "a noise {direction}")),
    "heldout": CaptionLanguage(
        clause_forms=("{direction} is where {sound}", "{sound}, heard {direction}"),
        joiners=((", ", " whereas "), ("; ", " as "), (" - ", " - ")),
        frames=("you can hear that {}.", "in this clip, {}"),
        prompt_forms=("something can be heard {direction}",
                      "you hear something {direction}")),
}


def language_config(language=None):
    """The sentence material of a language as plain lists (JSON-ready), per split.

    A prepared data folder records it, so that scenes captioned with other material
    are prepared anew.

    Example
    -------
    >>> config = language_config()
    >>> sorted(config), config["heldout"]["joiners"][0]
    (['heldout', 'train'], [', ', ' whereas '])
    """
    return {split: {key: [list(v) if isinstance(v, tuple) else v for v in values]
                    for key, values in dataclasses.asdict(material).items()}
            for split, material in (language or ENGLISH).items()}


# Mention orders of a drawn style: sounds named left to right, right to left, or in
# random order (the caption must then bind each sound to its own direction phrase).
MENTION_ORDERS = ("left_to_right", "right_to_left", "random")


@dataclass(frozen=True)
class CaptionStyle:
    """Every choice of one caption; the same style with permuted directions gives the
    hard negatives.

    Arguments
    ---------
    clause_form, between, last, frame : str
        As in :class:`CaptionLanguage`.
    wordings : dict
        Zone name -> the wording used for it.
    order : str
        ``"left_to_right"``, ``"right_to_left"`` or ``"as_given"`` (the order of the
        sources passed to :func:`compose`).
    capitalise : bool
        Upper-case the first letter.
    """

    clause_form: str
    between: str
    last: str
    frame: str = "{}"
    wordings: dict = field(default_factory=dict)
    order: str = "left_to_right"
    capitalise: bool = False


def template_style(phrasing=0, zones=None, order="left_to_right"):
    """The style of template phrasing ``phrasing`` (0 is the fixed default)."""
    zones = ZoneVocabulary.from_config(zones)
    if not 0 <= phrasing < N_PHRASINGS:
        raise ValueError(f"phrasing must be in [0, {N_PHRASINGS}), got {phrasing}.")
    form, between, last = TEMPLATE_PHRASINGS[phrasing]
    return CaptionStyle(form, between, last,
                        wordings={z.name: z.phrase for z in zones.zones}, order=order)


def draw_style(rng, zones=None, split="train", language=None):
    """Draws a caption style from a language split.

    Arguments
    ---------
    rng : numpy.random.Generator
    zones : ZoneVocabulary or list of dict, optional
    split : str
        ``"train"`` or ``"heldout"``.
    language : dict of str -> CaptionLanguage, optional
        Default :data:`ENGLISH`.

    Returns
    -------
    CaptionStyle
        With ``order`` ``"left_to_right"``, ``"right_to_left"`` or, for a random
        mention order, ``"random"`` (see :func:`scene_captions`).
    """
    zones = ZoneVocabulary.from_config(zones)
    material = (language or ENGLISH)[split]

    def pick(options):
        return options[int(rng.integers(len(options)))]

    between, last = pick(material.joiners)
    return CaptionStyle(
        clause_form=pick(material.clause_forms), between=between, last=last,
        frame=pick(material.frames),
        wordings={z.name: pick(z.wordings(split)) for z in zones.zones},
        order=pick(MENTION_ORDERS), capitalise=bool(rng.integers(2)))


def compose(sources, style, zones=None):
    """The caption of ``sources`` in a style.

    Arguments
    ---------
    sources : list of dict
        Each with ``caption`` (e.g. ``"a dog barks"``) and ``zone`` (a zone name).
    style : CaptionStyle
    zones : ZoneVocabulary or list of dict, optional

    Returns
    -------
    str

    Example
    -------
    >>> style = CaptionStyle("{direction}, {sound}", ", ", " whereas ",
    ...                      frame="in this clip, {}", capitalise=True,
    ...                      wordings={"left": "far to the left", "right": "hard right"})
    >>> compose([{"caption": "a car passes", "zone": "right"},
    ...          {"caption": "a dog barks", "zone": "left"}], style)
    'In this clip, far to the left, a dog barks whereas hard right, a car passes'
    """
    zones = ZoneVocabulary.from_config(zones)
    if not sources:
        raise ValueError("A scene caption needs at least one source.")
    if style.order in ("left_to_right", "right_to_left"):
        sources = sorted(sources, key=lambda s: zones.index(s["zone"]),
                         reverse=style.order == "right_to_left")
    elif style.order != "as_given":
        raise ValueError(f"Style order must be left_to_right, right_to_left or "
                         f"as_given, got {style.order!r}.")
    parts = [source_clause(source, style, zones) for source in sources]
    scene = parts[0] if len(parts) == 1 else \
        style.between.join(parts[:-1]) + style.last + parts[-1]
    caption = style.frame.format(scene)
    return caption[:1].upper() + caption[1:] if style.capitalise else caption


def source_clause(source, style, zones=None):
    """One source's clause in a style: what :func:`caption_clauses` should find for it.

    Example
    -------
    >>> style = CaptionStyle("{direction}, {sound}", ", ", " and ",
    ...                      wordings={"left": "off to the left"})
    >>> source_clause({"caption": "a dog barks", "zone": "left"}, style)
    'off to the left, a dog barks'
    """
    sound = str(source["caption"]).strip()
    if not sound:
        raise ValueError(f"Source {source} has an empty caption.")
    wording = (style.wordings.get(source["zone"])
               or ZoneVocabulary.from_config(zones)[source["zone"]].phrase)
    return style.clause_form.format(sound=sound, direction=wording)


def scene_captions(sources, rng, zones=None, split="train", count=1, language=None):
    """Captions of a scene drawn from a language, each with its hard negatives.

    Arguments
    ---------
    sources : list of dict
        Each with ``caption`` and ``zone``.
    rng : numpy.random.Generator
    zones : ZoneVocabulary or list of dict, optional
    split : str
        ``"train"``, ``"heldout"`` or ``"template"`` (then the template phrasings
        0, 1, ... in turn, not drawn, with :func:`permuted_captions` as negatives).
    count : int
        How many captions.
    language : dict of str -> CaptionLanguage, optional

    Returns
    -------
    captions : list of str
    permuted : list of list of str
        For each caption, the same style and the same order of the sounds with every
        other source-to-zone assignment (``k! - 1`` captions for ``k`` sources, in a
        fixed order): the SCL negatives.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> captions, permuted = scene_captions(
    ...     [{"caption": "a dog barks", "zone": "left"},
    ...      {"caption": "rain falls", "zone": "right"}], rng, split="heldout")
    >>> len(captions), len(permuted[0])
    (1, 1)
    """
    zones = ZoneVocabulary.from_config(zones)
    if split == "template":  # every caption, negatives included, left to right
        phrasings = [index % N_PHRASINGS for index in range(count)]
        return ([compose_caption(sources, p, zones) for p in phrasings],
                [permuted_captions(sources, p, zones) for p in phrasings])
    captions, permuted = [], []
    for _ in range(count):
        style = draw_style(rng, zones, split, language)
        # The negatives name the sounds in the caption's order: fix it once.
        if style.order == "random":
            mentioned = [sources[i] for i in rng.permutation(len(sources))]
        else:
            mentioned = sorted(sources, key=lambda s: zones.index(s["zone"]),
                               reverse=style.order == "right_to_left")
        style = dataclasses.replace(style, order="as_given")
        captions.append(compose(mentioned, style, zones))
        permuted.append([compose(swapped, style, zones)
                         for swapped in permuted_assignments(mentioned)])
    return captions, permuted


def compose_caption(sources, phrasing=0, zones=None, order="left_to_right"):
    """The template caption of a scene, its sources mentioned from left to right.

    Arguments
    ---------
    sources : list of dict
        Each with ``caption`` (e.g. ``"a dog barks"``) and ``zone`` (a zone name), as the
        sources stand in a manifest entry.
    phrasing : int
        Which of the ``N_PHRASINGS`` template phrasings to use (0 is the default).
    zones : ZoneVocabulary or list of dict, optional
        The zone vocabulary (default: five zones).
    order : str
        ``"left_to_right"`` or ``"as_given"`` (the sources in list order).

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
    return compose(sources, template_style(phrasing, zones, order), zones)


def permuted_captions(sources, phrasing=0, zones=None, order="left_to_right"):
    """Template captions of every non-identity permutation of the zone assignment.

    These are the hard negatives of spatial contrastive learning: the same sources, the
    same set of directions, but the wrong source in each direction (k! - 1 captions for
    k sources: none for one source, 1 for two, 5 for three).

    Arguments
    ---------
    sources : list of dict
        Each with ``caption`` and ``zone``.
    phrasing : int
        Template phrasing, as in :func:`compose_caption`.
    zones : ZoneVocabulary or list of dict, optional
    order : str
        Mention order, as in :func:`compose_caption`.

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


def direction_prompts(zones=None, template=None):
    """Direction-only prompts for zero-shot direction classification (template).

    Arguments
    ---------
    zones : ZoneVocabulary or list of dict, optional
        The zone vocabulary.
    template : str, optional
        A prompt form with a ``{direction}`` field (default: the first training one).

    Returns
    -------
    list of str
        One prompt per zone (its template wording), left to right.

    Example
    -------
    >>> direction_prompts()[0]
    'a sound on the left'
    """
    zones = ZoneVocabulary.from_config(zones)
    template = template or ENGLISH["train"].prompt_forms[0]
    return [template.format(direction=z.phrase) for z in zones.zones]


def direction_prompt_sets(zones=None, split="template", language=None):
    """Every direction prompt of a language split, grouped by zone.

    Zero-shot direction classification averages the embeddings of a zone's prompts
    (prompt ensembling). ``"template"`` gives :func:`direction_prompts`' one prompt
    per zone; ``"heldout"`` every held-out prompt form with every held-out wording.

    Example
    -------
    >>> direction_prompt_sets(split="heldout")[0][:2]
    ['something can be heard from the left side', 'something can be heard at the far left']
    """
    zones = ZoneVocabulary.from_config(zones)
    if split == "template":
        return [[prompt] for prompt in direction_prompts(zones)]
    forms = (language or ENGLISH)[split].prompt_forms
    return [[form.format(direction=w) for form in forms for w in z.wordings(split)]
            for z in zones.zones]


def random_direction_prompts(rng, zones=None, language=None):
    """One training prompt per zone, form and wording drawn (the direction objective).

    Arguments
    ---------
    rng : numpy.random.Generator
    zones : ZoneVocabulary or list of dict, optional
    language : dict of str -> CaptionLanguage, optional

    Returns
    -------
    list of str
        Left to right.
    """
    zones = ZoneVocabulary.from_config(zones)
    forms = (language or ENGLISH)["train"].prompt_forms
    form = forms[int(rng.integers(len(forms)))]  # one form: only the direction differs
    return [form.format(direction=z.phrases[int(rng.integers(len(z.phrases)))])
            for z in zones.zones]


# Where a caption may be cut: punctuation, a spaced dash, and joiner words of English.
JOINER_WORDS = ("and", "while", "whilst", "whereas", "as", "but", "meanwhile", "plus",
                "then")
_JOINER = r"\b(?:" + "|".join(JOINER_WORDS) + r")\b"
_CUT = re.compile(r"\s*(?:[,;:.!?]+|\s[-\u2013\u2014]+)(?:\s*" + _JOINER + r")?\s*"
                  r"|\s+" + _JOINER + r"\s+", re.IGNORECASE)
_EDGES = re.compile(r"^(?:[\s,;:.!?\-\u2013\u2014]|\b(?:" + "|".join(JOINER_WORDS)
                    + r")\b)+|[\s,;:.!?\-\u2013\u2014]+$", re.IGNORECASE)


# Words of the training language's frames and clause forms ("in this recording",
# "somewhere"): never a sound's content. Held-out frames are not listed: the clause
# finder must cope with words it does not know.
FRAME_WORDS = frozenset(
    w for text in ENGLISH["train"].frames + ENGLISH["train"].clause_forms
    for w in words_of(re.sub(r"\{\w*\}", " ", text)))

# What a reading of a caption costs (see ``_read``): a clause without a sound, a sound
# after the last direction of a sound-first reading, a piece before the first
# direction of a direction-first reading (a frame: "in this clip, ..."), a direction
# piece with its own sound on the other side (by the share of its sound words there),
# and a direction word read as part of a sound ("a car passes in front of the house").
_SOUNDLESS, _TRAILING, _LEADING, _AGAINST_FORM, _DIRECTION_IN_SOUND = 2.0, 2.0, 0.5, 1.0, 1.5
_MOST_AMBIGUOUS = 4        # readings tried: 2 forms x 2 ** (ambiguous pieces, at most 4)


@dataclass
class _Unit:
    """A stretch of a caption (one piece, or a compound direction of two or more)."""

    start: int
    end: int
    pieces: list               # (start, end) of its pieces
    sound_before: int = 0      # sound words before its first direction word (or all)
    sound_after: int = 0       # sound words after its last direction word
    sound_inside: int = 0      # sound words between its direction words
    directions: int = 0        # direction words
    after_and: bool = False    # cut from the stretch before by a bare " and "

    @property
    def has_sound(self):
        return self.sound_before + self.sound_inside + self.sound_after > 0


def caption_clauses(caption, zones=None):
    """Splits a caption into its "sound + direction" clauses.

    The caption is cut at punctuation and joiner words ("and", "while", "whereas",
    ...) into pieces; a piece holds direction words (from the zone vocabulary,
    :attr:`ZoneVocabulary.direction_words`, stems included: "leftward"), sound words
    (any other word that is not a function word, a training wording's word or a
    training frame's word) or both. Two direction pieces joined by a bare "and" are one
    compound direction ("ahead and to the left"). The pieces are then read both ways a
    caption can be written, sound first ("a dog barks, to the left, ...") and direction
    first ("to the left, a dog barks, ..."), and the reading that leaves the fewest
    clauses without a sound, sounds without a direction and pieces against the form
    wins: a caption keeps one clause form throughout, so the form of its clear clauses
    places the sound of its ambiguous ones. Wordings never seen ("all the way left",
    "just left of centre") are found by their direction words. A caption with fewer
    than two clauses (free text, a direction prompt, one source) is returned whole.

    Arguments
    ---------
    caption : str
    zones : ZoneVocabulary or list of dict, optional
        The zone vocabulary whose direction words anchor the clauses.

    Returns
    -------
    list of str
        The clauses in the order the caption mentions them (at least one).

    Example
    -------
    >>> for clause in caption_clauses("A dog barks on the left, a bell rings straight "
    ...                               "ahead and a campfire pops and crackles rightward."):
    ...     print(clause)
    A dog barks on the left
    a bell rings straight ahead
    a campfire pops and crackles rightward
    >>> caption_clauses("Listen: off to the left, a dog barks and growls, "
    ...                 "and ahead and to the right, a bell rings.")
    ['off to the left, a dog barks and growls', 'ahead and to the right, a bell rings']
    >>> caption_clauses("rain falls on a tin roof")
    ['rain falls on a tin roof']
    """
    spans = _clause_spans(caption, zones)
    if len(spans) == 1:
        return [caption.strip()]
    return [_EDGES.sub("", text) for text, _ in spans]


def caption_clause_pieces(caption, zones=None, split_roles=False):
    """The clauses of a caption (:func:`caption_clauses`), each as its pieces: the
    stretches of text between punctuation and joiner words.

    A text encoder that reads each piece on its own (and caches it) sees few distinct
    texts: sounds and wordings recur across captions where whole clauses rarely do.
    Pieces of a scene caption with neither a sound nor a direction word (the training
    frames "in this recording", "listen") carry nothing of the scene and are left out.
    A caption of one clause (one source, a direction prompt, free text) is one piece,
    read whole.

    Example
    -------
    >>> caption_clause_pieces("In this recording, a dog barks on the left; "
    ...                       "to the right, rain falls")
    [['a dog barks on the left'], ['to the right', 'rain falls']]
    >>> caption_clause_pieces("To the right, rain falls.")
    [['To the right, rain falls.']]

    With ``split_roles`` (the text tower's default), every caption, of one clause or
    several, is cut into pieces, and a piece that holds both a sound and a direction
    is cut between them (:func:`_role_parts`), so that a sound reads the same whatever
    clause form, wording or frame surrounds it. Pieces of neither kind are kept, in
    the clause of the piece after them: the text tower then learns, from the training
    frames, to read past words that say nothing of the scene, as it must for frames
    it never read.

    >>> caption_clause_pieces("In this recording, a dog barks on the left; "
    ...                       "to the right, rain falls", split_roles=True)
    [['In this recording', 'a dog barks', 'on the left'], ['to the right', 'rain falls']]
    >>> caption_clause_pieces("A bell rings somewhere off to the left.", split_roles=True)
    [['A bell rings', 'somewhere', 'off to the left']]
    >>> caption_clause_pieces("rain falls on a tin roof", split_roles=True)
    [['rain falls on a tin roof']]
    """
    return [pieces for _, pieces in _clause_spans(caption, zones, split_roles)]


def join_neighbour_pieces(clauses, rng, probability):
    """Joins neighbouring pieces of a clause at random (a training augmentation).

    The clause finder cuts a clause at the words it knows; around words it does not
    (a frame, a form or a wording it never read) the pieces stay joined, so a sound
    can reach the encoder as "you can make out a bell ringing" rather than "a bell
    ringing". Joining, in training, a random share of the cuts it did make teaches the
    text tower to read a sound or a direction inside such longer pieces, without
    naming any word it has not read.

    Arguments
    ---------
    clauses : list of list of str
        One list of pieces per clause (:func:`caption_clause_pieces`).
    rng : random.Random
        Decides each join.
    probability : float
        Chance that each pair of neighbouring pieces is joined.

    Returns
    -------
    list of list of str

    Example
    -------
    >>> import random
    >>> pieces = [["In this recording", "a dog barks", "on the left"], ["rain falls"]]
    >>> join_neighbour_pieces(pieces, random.Random(0), 1.0)
    [['In this recording a dog barks on the left'], ['rain falls']]
    >>> join_neighbour_pieces(pieces, random.Random(0), 0.0) == pieces
    True
    """
    joined = []
    for pieces in clauses:
        kept = [pieces[0]]
        for piece in pieces[1:]:
            if rng.random() < probability:
                kept[-1] = f"{kept[-1]} {piece}"
            else:
                kept.append(piece)
        joined.append(kept)
    return joined


# Words a caption may wrap around a sound or a direction that say neither ("clearly",
# "we notice"): glued to pieces at random in training (:func:`glue_fillers`). None of
# them is a word that only the held-out language uses (a test checks it).
FILLERS = ("there's", "we notice", "one notices", "also", "now", "again", "apparently",
           "clearly", "faintly", "audibly", "distinctly", "softly", "loudly", "quietly",
           "nearby", "too", "for a while", "the sound of", "recorded", "captured",
           "presumably", "mostly", "briefly", "continuously")
# A piece is glued in this many ways only (a filler and a side, fixed by its text), so
# that a frozen text encoder reads at most 1 + FILLER_WAYS_PER_PIECE texts per piece.
FILLER_WAYS_PER_PIECE = 1


def glue_fillers(clauses, rng, probability, fillers=FILLERS,
                 ways_per_piece=FILLER_WAYS_PER_PIECE):
    """Glues a filler before or after pieces at random (a training augmentation).

    A caption's words that the clause finder does not know stay inside the piece next
    to them ("is where a bell rings", "heard a bit left"). Gluing, in training, words
    that say nothing of the scene to a random share of the pieces teaches the text
    tower to read a sound or a direction past words it has not read, with fillers of
    their own rather than any word of the held-out language.

    Arguments
    ---------
    clauses : list of list of str
        One list of pieces per clause (:func:`caption_clause_pieces`).
    rng : random.Random
        Decides which pieces get a filler (and, with several ways, which way).
    probability : float
        Chance that each piece gets a filler.
    fillers : tuple of str
    ways_per_piece : int or None
        A piece is glued in one of this many ways (filler, side), consecutive in the
        list of all ``2 * len(fillers)`` ways from a place set by the crc32 of its
        lower-cased text, so that every filler still reaches some pieces. It bounds the
        texts a frozen text encoder reads and caches (None: any way; over the
        recipe's schedule 19 998 texts against 4 416 with one way and 2 542
        without fillers).

    Returns
    -------
    list of list of str

    Example
    -------
    >>> import random
    >>> glue_fillers([["a dog barks", "on the left"]], random.Random(3), 1.0)
    [['a dog barks loudly', 'on the left audibly']]
    >>> glue_fillers([["a dog barks"]], random.Random(3), 0.0)
    [['a dog barks']]
    """
    glued = []
    for pieces in clauses:
        row = []
        for piece in pieces:
            if rng.random() < probability:
                piece = _glued(piece, fillers, _way(piece, rng, 2 * len(fillers),
                                                    ways_per_piece))
            row.append(piece)
        glued.append(row)
    return glued


def _way(piece, rng, n_ways, ways_per_piece):
    """Index of a (filler, side) way among ``n_ways``."""
    if not ways_per_piece or ways_per_piece >= n_ways:
        return rng.randrange(n_ways)
    start = zlib.crc32(piece.lower().encode("utf-8"))
    return (start + rng.randrange(ways_per_piece)) % n_ways


def _glued(piece, fillers, way):
    filler = fillers[way // 2]
    return f"{filler} {piece}" if way % 2 == 0 else f"{piece} {filler}"


def training_pieces(clauses, caption, join_prob=0.0, filler_prob=0.0):
    """The pieces a text tower reads for a caption in training: neighbours joined
    (:func:`join_neighbour_pieces`) and fillers glued (:func:`glue_fillers`) at random,
    decided by the crc32 of the caption, so that a caption always reads the same way
    and a resumed run reads what it would have read.

    Arguments
    ---------
    clauses : list of list of str
        The caption's pieces (:func:`caption_clause_pieces`).
    caption : str
        The caption itself (seeds the choices).
    join_prob, filler_prob : float

    Returns
    -------
    list of list of str

    Example
    -------
    >>> pieces = [["a dog barks", "on the left"]]
    >>> training_pieces(pieces, "A dog barks on the left.", filler_prob=0.5)
    [['a dog barks', 'on the left audibly']]
    >>> training_pieces(pieces, "A dog barks on the left.") == pieces
    True
    """
    if join_prob <= 0 and filler_prob <= 0:
        return clauses
    rng = random.Random(zlib.crc32(caption.encode("utf-8")))
    if join_prob > 0:
        clauses = join_neighbour_pieces(clauses, rng, join_prob)
    if filler_prob > 0:
        clauses = glue_fillers(clauses, rng, filler_prob)
    return clauses


def _clause_spans(caption, zones, split_roles=False):
    """``(clause text, [piece texts])`` per clause."""
    zones = ZoneVocabulary.from_config(zones)
    text = caption.strip()
    units = _compound_directions(_pieces(text, zones, keep_fillers=split_roles), text,
                                 zones)
    clauses = _group(units)
    if len(clauses) < 2 and not (split_roles and units):
        return [(text, [text])]
    spans = []
    for clause in clauses:
        pieces = [span for unit in clause for span in unit.pieces]
        if split_roles:
            pieces = [part for start, end in pieces
                      for part in _role_parts(text, start, end, zones)]
        spans.append((text[pieces[0][0]:pieces[-1][1]],
                      [text[start:end] for start, end in pieces]))
    return spans


def _role_parts(text, start, end, zones):
    """A piece's sound, direction and other parts, as ``(start, end)`` spans in order.

    The direction part runs from the piece's first direction word to its last,
    widened over the function and wording words next to it ("off to the left",
    "on the left-hand side"; not an article after it: "to the left | a dog barks").
    Words of neither kind between it and a sound (a frame's or a clause form's:
    "somewhere") are a part of their own. A word the vocabulary does not know right
    before the direction may modify it ("just left", "a dog barks barely left"), so
    a sound before it is cut off only where another word separates them. A piece
    without both kinds of word, or with a sound word between two direction words,
    stays whole.
    """
    piece = text[start:end]
    kinds = _word_kinds(piece, zones)
    words = [(start + m.start(), start + m.end(), m.group())
             for m in _WORD.finditer(piece.lower())]
    first, last = kinds.find("d"), kinds.rfind("d")
    if first < 0 or "s" not in kinds or "s" in kinds[first:last]:
        return [(start, end)]

    def wording(i):
        return words[i][2] in zones.wording_words or words[i][2] in FUNCTION_WORDS

    modified = first > 0 and kinds[first - 1] == "s"
    while first > 0 and kinds[first - 1] == "-" and wording(first - 1):
        first -= 1
    while (last + 1 < len(kinds) and kinds[last + 1] == "-" and wording(last + 1)
           and words[last + 1][2] not in FUNCTION_WORDS):
        last += 1
    sound_end = kinds.rfind("s", 0, first) + 1
    sound_start = kinds.find("s", last + 1)
    while sound_start > last + 1 and words[sound_start - 1][2] in FUNCTION_WORDS:
        sound_start -= 1  # "to the left | a dog barks"
    if modified:
        sound_end = first = 0
    bounds = [0, sound_end, first, last + 1,
              len(kinds) if sound_start < 0 else sound_start, len(kinds)]
    return [(words[a][0], words[b - 1][1]) for a, b in itertools.pairwise(bounds) if b > a]


def _pieces(text, zones, keep_fillers=False):
    """The pieces between cuts that have a sound or a direction word, profiled; with
    ``keep_fillers``, a piece of neither kind ("in this recording") joins the next
    one (the last one at the end of the caption)."""
    units, start, joiner, fillers = [], 0, "", []
    for cut in list(_CUT.finditer(text)) + [None]:
        end = cut.start() if cut else len(text)
        unit = _profile(_Unit(start, end, [(start, end)],
                              after_and=joiner.strip().lower() == "and"),
                        text, zones)
        if unit.directions or unit.has_sound:
            unit.pieces = fillers + unit.pieces
            fillers = []
            units.append(unit)
        elif keep_fillers and words_of(text[start:end]):
            fillers.append((start, end))
        start = cut.end() if cut else end
        joiner = cut.group() if cut else ""
    if fillers and units:
        units[-1].pieces = units[-1].pieces + fillers
    return units


def _profile(unit, text, zones):
    """Counts a unit's direction words and its sound words around them."""
    kinds = "".join(_word_kinds(text[start:end], zones) for start, end in unit.pieces)
    directions = [i for i, kind in enumerate(kinds) if kind == "d"]
    sound = [i for i, kind in enumerate(kinds) if kind == "s"]
    unit.directions = len(directions)
    if not directions:
        unit.sound_before, unit.sound_inside, unit.sound_after = len(sound), 0, 0
        return unit
    unit.sound_before = sum(i < directions[0] for i in sound)
    unit.sound_after = sum(i > directions[-1] for i in sound)
    unit.sound_inside = len(sound) - unit.sound_before - unit.sound_after
    return unit


def _word_kinds(piece, zones):
    """One letter per word of a piece: ``d`` direction, ``s`` sound, ``-`` neither
    (function, wording or frame word); cached per vocabulary, pieces recur."""
    kinds = zones._piece_kinds.get(piece)
    if kinds is None:
        kinds = "".join(
            "d" if zones.is_direction_word(w) else
            "-" if w in zones.wording_words or w in FUNCTION_WORDS or w in FRAME_WORDS
            else "s" for w in words_of(piece))
        if len(zones._piece_kinds) > 100_000:
            zones._piece_kinds.clear()
        zones._piece_kinds[piece] = kinds
    return kinds


def _compound_directions(units, text, zones):
    """Joins "ahead" + " and " + "to the left ..." into one compound direction: two
    direction units joined by a bare "and" with no sound between them, unless the
    result would have sounds on both sides ("a dog barks on the left and on the right
    a bell rings" is two clauses)."""
    joined = []
    for unit in units:
        previous = joined[-1] if joined else None
        if (previous is not None and unit.after_and and previous.directions
                and unit.directions and previous.sound_after == 0
                and unit.sound_before == 0
                and not (previous.sound_before and unit.sound_after)):
            joined[-1] = _profile(_Unit(previous.start, unit.end,
                                        previous.pieces + unit.pieces,
                                        after_and=previous.after_and), text, zones)
        else:
            joined.append(unit)
    return joined


def _group(units):
    """The clauses (lists of units) of the cheapest reading of a caption."""
    anchors = [i for i, unit in enumerate(units) if unit.directions]
    if len(anchors) < 2:
        return [units]
    ambiguous = [i for i in anchors
                 if units[i].sound_before and units[i].sound_after][:_MOST_AMBIGUOUS]
    best_cost, best = float("inf"), [units]
    for as_sound in itertools.product((False, True), repeat=len(ambiguous)):
        sounds = {i for i, flag in zip(ambiguous, as_sound) if flag}
        for direction_first in (False, True):
            cost, clauses = _read(units, [i for i in anchors if i not in sounds],
                                  direction_first)
            cost += _DIRECTION_IN_SOUND * len(sounds)
            if cost < best_cost:
                best_cost, best = cost, clauses
    return best


def _read(units, anchors, direction_first):
    """Cost and clauses of one reading: each anchor (a unit with a direction) takes the
    sound units after it (direction first) or before it (sound first)."""
    if len(anchors) < 2:
        return float("inf"), [units]
    if direction_first:
        bounds = [0] + anchors[1:] + [len(units)]
        cost = _LEADING * anchors[0]
    else:
        bounds = [0] + [i + 1 for i in anchors[:-1]] + [len(units)]
        cost = _TRAILING * (len(units) - anchors[-1] - 1)
    clauses = [units[a:b] for a, b in itertools.pairwise(bounds)]
    for anchor in anchors:  # the share of an anchor's own sound on the wrong side
        unit = units[anchor]
        around = unit.sound_before + unit.sound_after
        wrong = unit.sound_before if direction_first else unit.sound_after
        cost += _AGAINST_FORM * wrong / max(around, 1)
    soundless = [not any(u.has_sound for u in clause) for clause in clauses]
    cost += _SOUNDLESS * sum(soundless)
    return cost, _merge_soundless(clauses, soundless, direction_first)


def _merge_soundless(clauses, soundless, direction_first):
    """A clause with a direction but no sound joins the clause its sound is in: the next
    one in a direction-first reading, the one before in a sound-first reading."""
    merged, carry = [], []
    if direction_first:
        for clause, empty in zip(clauses, soundless):
            if empty:
                carry = carry + clause
            else:
                merged.append(carry + clause)
                carry = []
        if carry:
            merged[-1:] = [merged[-1] + carry] if merged else [carry]
        return merged
    for clause, empty in zip(clauses, soundless):
        if empty and merged:
            merged[-1] = merged[-1] + clause
        elif empty:
            carry = carry + clause
        else:
            merged.append(carry + clause)
            carry = []
    return merged or [carry]
