"""The Spatial-CLAP training objective: one module, named terms, weights from the YAML.

:class:`SpatialCLAPObjective` returns each term of the loss by name; the Brain adds them
up with their weights and logs every one, in training and in validation::

    clap              InfoNCE between scenes and their captions, negatives from all ranks
    scl               SCL: a scene's caption against its permuted-assignment captions
    text_consistency  the text side of SCL: another caption of the scene must score its
                      caption above the permuted ones
    direction         one-source scenes against direction-only prompts of every zone
    source_zone       SELD-style: a linear per-class read-out of the embeddings names the
                      zone of each labelled source
    content           a scene's caption against the same caption with one sound replaced
                      by another scene's (same directions, same words around it)

``clap`` is always on; any other term is on when its weight is above 0. Every text a
step needs (captions, negatives, paraphrases, prompts) goes through the text tower in
one call (:class:`StepTexts`). The weights are constructor arguments, so the recipe
builds the objective in its YAML
(``objective: !new:spatial_clap_sb.objective.SpatialCLAPObjective``) and a misspelled
weight is an error, not a term silently off.

Why the text-consistency term: as long as neither tower tells a scene from its permuted
twin, the SCL gradient on each tower is scaled by the other's (near-zero) difference.
Asking another caption of the same scene to prefer its caption over the permuted ones
separates the text side first, from the captions alone; the audio side then has a
target to move towards. The direction term names directions on their own ("a sound on
the left", "a noise far to the right": a prompt form and a wording per zone drawn each
step), the training signal zero-shot direction classification needs.
"""
import logging
import random

import numpy as np
import torch
from torch import nn

from spatial_clap_sb.language import ZoneVocabulary, random_direction_prompts
from spatial_clap_sb.losses import (
    clap_loss,
    pad_negatives,
    prompt_classification_loss,
    scl_loss,
)
from spatial_clap_sb.models.source_zone import SourceZoneHead

logger = logging.getLogger(__name__)

TERMS = ("clap", "scl", "text_consistency", "direction", "source_zone", "content")
# Largest source-zone read-out built (weights): the default has 25 classes x 5 zones x
# 513; AudioSet's 527 labels as tags give 1.35 M.
MAX_SOURCE_ZONE_WEIGHTS = 10_000_000


def pick_paraphrases(captions, phrasings, rng=random):
    """Another phrasing of each scene's caption, for the text-consistency term.

    Arguments
    ---------
    captions : list of str
        The caption used for each scene in this batch.
    phrasings : list of list of str
        Every phrasing of each scene (``captions`` of the data pipelines).
    rng : random.Random
        Source of the choice among several other phrasings.

    Returns
    -------
    paraphrases : list of str
        A different phrasing per scene, or the caption itself where there is none.
    usable : list of bool
        False where a scene has no other phrasing (its row must be skipped).

    Example
    -------
    >>> pick_paraphrases(["a on the left", "b"], [["a on the left", "on the left, a"], ["b"]])
    (['on the left, a', 'b'], [True, False])
    """
    paraphrases, usable = [], []
    for caption, options in zip(captions, phrasings):
        others = [c for c in options if c != caption]
        usable.append(bool(others))
        paraphrases.append(rng.choice(others) if others else caption)
    return paraphrases, usable


def content_swapped_captions(captions, sources, rng=random, per_scene=2):
    """Each scene's caption with one of its sounds replaced by a sound of another scene
    of the batch: hard negatives that differ from the caption in content alone.

    A source's sound is found in the caption as its ``caption`` text (any case); the
    replacement is the sound of a source of another scene whose class (label, else
    caption) no source of this scene has.

    Arguments
    ---------
    captions : list of str
        The caption of each scene.
    sources : list of list of dict
        Per scene, its sources (``caption`` and ``label``).
    rng : random.Random
    per_scene : int
        Negatives drawn per scene (fewer when the caption or the batch has no more).

    Returns
    -------
    list of list of str

    Example
    -------
    >>> sources = [[{"caption": "a dog barks", "label": "dog"}],
    ...            [{"caption": "rain falls", "label": "rain"}]]
    >>> content_swapped_captions(["On the left a dog barks", "rain falls ahead"],
    ...                          sources, per_scene=1)
    [['On the left rain falls'], ['a dog barks ahead']]
    """
    def kind(source):
        return source.get("label") or source["caption"]

    pool = {}
    for scene in sources:
        for source in scene:
            pool.setdefault(kind(source), set()).add(source["caption"])
    negatives = []
    for caption, scene in zip(captions, sources):
        present = {kind(source) for source in scene}
        others = sorted(c for k, texts in pool.items() if k not in present for c in texts)
        found = [s["caption"] for s in scene if s["caption"].lower() in caption.lower()]
        swapped = set()
        for _ in range(per_scene * 3):
            if len(swapped) == per_scene or not found or not others:
                break
            sound, replacement = rng.choice(found), rng.choice(others)
            start = caption.lower().index(sound.lower())
            swapped.add(caption[:start] + replacement + caption[start + len(sound):])
        negatives.append(sorted(swapped))
    return negatives


class StepTexts:
    """The texts of one training step, gathered for a single text-tower call and
    handed back by part.

    Example
    -------
    >>> texts = StepTexts()
    >>> captions = texts.add(["a dog barks", "rain falls"])
    >>> negatives = texts.add_nested([["a bell rings"], []])
    >>> embedded = texts.embed(lambda batch: torch.eye(3)[:len(batch)])
    >>> padded, mask = texts.padded(embedded, negatives, embedded[captions])
    >>> embedded[captions].shape, padded.shape, mask.tolist()
    (torch.Size([2, 3]), torch.Size([2, 1, 3]), [[True], [False]])
    """

    def __init__(self):
        self.texts = []

    def add(self, texts):
        """Appends ``texts``; returns the slice of their rows."""
        start = len(self.texts)
        self.texts.extend(texts)
        return slice(start, len(self.texts))

    def add_nested(self, groups):
        """Appends each scene's list of texts; returns ``(rows, counts)``."""
        counts = [len(group) for group in groups]
        return self.add(t for group in groups for t in group), counts

    def embed(self, text_tower):
        """``[len(texts), D]``: every gathered text through ``text_tower`` at once."""
        return text_tower(self.texts)

    @staticmethod
    def rows(embedded, part):
        """The embeddings of a part added with :meth:`add` (None stays None)."""
        return None if part is None else embedded[part]

    @staticmethod
    def padded(embedded, part, like):
        """A part added with :meth:`add_nested`, padded per scene
        (:func:`~spatial_clap_sb.losses.pad_negatives`); None stays None."""
        if part is None:
            return None
        rows, counts = part
        return pad_negatives(embedded[rows], counts, like)


class SpatialCLAPObjective(nn.Module):
    """The training loss of Spatial-CLAP as named, weighted terms (module docstring).

    Arguments
    ---------
    zones : ZoneVocabulary or list of dict
        The zone vocabulary (direction prompts and the source-zone read-out).
    scl_weight, text_consistency_weight, direction_weight, source_zone_weight : float
        Weights of the terms (0 = off); ``clap`` has weight 1.
    content_weight : float
        Weight of the content-swapped hard negatives (0 = off).
    source_zone_on_text : bool
        The source-zone read-out also reads the caption embeddings (one shared head:
        both towers write the same class-by-zone code into the joint space).

    Example
    -------
    >>> objective = SpatialCLAPObjective(ZoneVocabulary.default(), scl_weight=1.0)
    >>> audio = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    >>> negatives, mask = torch.zeros(3, 1, 8), torch.zeros(3, 1, dtype=torch.bool)
    >>> terms = objective.terms(audio, audio, torch.tensor(10.0),
    ...                         negatives=negatives, mask=mask)
    >>> sorted(terms), objective.total(terms).shape
    (['clap', 'scl'], torch.Size([]))
    """

    def __init__(self, zones, scl_weight=1.0, text_consistency_weight=0.0,
                 direction_weight=0.0, source_zone_weight=0.0, source_zone_on_text=True,
                 content_weight=0.0):
        super().__init__()
        self.zones = ZoneVocabulary.from_config(zones)
        self.weights = {"clap": 1.0, "scl": float(scl_weight),
                        "text_consistency": float(text_consistency_weight),
                        "direction": float(direction_weight),
                        "source_zone": float(source_zone_weight),
                        "content": float(content_weight)}
        negative = [name for name, weight in self.weights.items() if weight < 0]
        if negative:
            raise ValueError(f"Objective weights must be >= 0 (0 = off): {negative}.")
        self.source_zone_on_text = bool(source_zone_on_text)
        self.source_zone_head = None

    def is_on(self, term):
        """Whether ``term`` counts in the loss."""
        return self.weights[term] > 0

    def add_source_zone_head(self, labels, embedding_dim):
        """Builds the source-zone read-out over the training classes.

        The classes are known only once the data is prepared, so the head is added
        then (by the recipe), not in the YAML. Nothing happens when the term is off.
        Classes are labels or tags (:func:`~spatial_clap_sb.models.source_zone.
        source_classes`); training data with neither (captioned corpora such as
        Clotho) switches the term off, with a warning.

        Arguments
        ---------
        labels : iterable of str
            The classes of the training sources.
        embedding_dim : int
            Size of the joint space.

        Returns
        -------
        SourceZoneHead or None

        Raises
        ------
        ValueError
            When the read-out would exceed ``MAX_SOURCE_ZONE_WEIGHTS`` weights.
        """
        if not self.is_on("source_zone"):
            return None
        labels = set(labels)
        if not labels:
            logger.warning("No training source has a class label or tags: the "
                           "source-zone term is off (it reads classes, never one per "
                           "clip). Label the clips, or give AudioCaps its AudioSet tags "
                           "(--audioset_tags), to use it.")
            self.weights["source_zone"] = 0.0
            return None
        weights = len(labels) * len(self.zones) * (embedding_dim + 1)
        if weights > MAX_SOURCE_ZONE_WEIGHTS:
            raise ValueError(
                f"The source-zone read-out would have {len(labels)} classes x "
                f"{len(self.zones)} zones x {embedding_dim + 1} = {weights:,} weights "
                f"(at most {MAX_SOURCE_ZONE_WEIGHTS:,}). Use coarser labels or tags, or "
                "set --source_zone_weight=0.")
        self.source_zone_head = SourceZoneHead(labels, self.zones.names, embedding_dim)
        return self.source_zone_head

    def forward(self, audio, batch, text_tower, logit_scale, rng=random):
        """The terms of one batch (unweighted; :meth:`total` weighs and adds them).

        Every text of the step (the captions, their permuted-assignment negatives,
        the paraphrases, the direction prompts and the content-swapped captions) goes
        through ``text_tower`` in one call: the frozen encoder then runs once on the
        texts it has not cached yet, and the pooling and projection once on the
        step's distinct clauses.

        Arguments
        ---------
        audio : torch.Tensor
            ``[B, D]`` unit-norm embeddings of the scenes.
        batch : speechbrain.dataio.batch.PaddedBatch
            With ``caption``, ``captions``, ``permuted``, ``zone_index`` and ``sources``.
        text_tower : callable
            ``list of str -> [N, D]`` unit-norm embeddings.
        logit_scale : torch.Tensor
            CLAP's logit scale.
        rng : random.Random
            Draws the paraphrases and the direction prompts (the global ``random`` in
            training, so a checkpointed run draws the same again).

        Returns
        -------
        dict of str to torch.Tensor
            A scalar per term that is on.
        """
        texts = StepTexts()
        captions = texts.add(batch.caption)
        negatives = paraphrases = prompts = content = usable = None
        if self.is_on("scl") or self.is_on("text_consistency"):
            negatives = texts.add_nested(batch.permuted)
        if self.is_on("text_consistency"):
            chosen, usable = pick_paraphrases(batch.caption, batch.captions, rng)
            paraphrases = texts.add(chosen)
            usable = torch.tensor(usable, device=audio.device)
        if self.is_on("direction"):
            prompt_rng = np.random.default_rng(rng.getrandbits(64))
            prompts = texts.add(random_direction_prompts(prompt_rng, self.zones))
        if self.is_on("content"):
            content = texts.add_nested(content_swapped_captions(
                batch.caption, batch.sources, rng))
        embedded = texts.embed(text_tower)
        negatives, mask = texts.padded(embedded, negatives, audio) or (None, None)
        return self.terms(audio, embedded[captions], logit_scale,
                          negatives=negatives, mask=mask,
                          paraphrases=texts.rows(embedded, paraphrases), usable=usable,
                          prompts=texts.rows(embedded, prompts),
                          zone_index=batch.zone_index.data, sources=batch.sources,
                          content=texts.padded(embedded, content, audio))

    def terms(self, audio, text, logit_scale, negatives=None, mask=None, paraphrases=None,
              usable=None, prompts=None, zone_index=None, sources=None, content=None):
        """The terms from embeddings alone (what :meth:`forward` computes after embedding
        the texts; tests and probes call it with embeddings of their own).

        Arguments
        ---------
        audio, text : torch.Tensor
            ``[B, D]`` scenes and captions.
        logit_scale : torch.Tensor
        negatives, mask : torch.Tensor
            ``[B, P, D]`` permuted-assignment captions and ``[B, P]`` which are real
            (:func:`~spatial_clap_sb.losses.embed_negatives`).
        paraphrases : torch.Tensor
            ``[B, D]`` another caption of each scene; ``usable`` ``[B]`` bool marks the
            scenes that have one.
        prompts : torch.Tensor
            ``[n_zones, D]`` direction prompts; ``zone_index`` ``[B]`` the zone of a
            one-source scene, -1 for the others.
        sources : list of list of dict
            Per scene, its sources (``zone`` and a label or tags), for the read-out.
        content : tuple of torch.Tensor
            ``([B, P, D], [B, P])``: content-swapped captions and which are real.

        Returns
        -------
        dict of str to torch.Tensor
        """
        terms = {"clap": clap_loss(audio, text, logit_scale)}
        if self.is_on("scl"):
            terms["scl"] = scl_loss(audio, text, negatives, mask, logit_scale)
        if self.is_on("text_consistency"):
            terms["text_consistency"] = scl_loss(paraphrases, text, negatives,
                                                 mask & usable[:, None], logit_scale)
        if self.is_on("source_zone"):
            terms["source_zone"] = self._source_zone_term(audio, text, sources)
        if self.is_on("direction"):
            terms["direction"] = prompt_classification_loss(audio, prompts, zone_index,
                                                            logit_scale)
        if self.is_on("content"):
            terms["content"] = scl_loss(audio, text, *content, logit_scale)
        return terms

    def _source_zone_term(self, audio, text, sources):
        """Read-out of the audio embeddings (and the captions', with
        ``source_zone_on_text``), in one call on the stacked rows."""
        if self.source_zone_head is None:
            raise RuntimeError("source_zone_weight > 0 but no read-out: call "
                               "add_source_zone_head(labels, embedding_dim) first.")
        embeddings = [audio, text] if self.source_zone_on_text else [audio]
        rows, classes, zones = self.source_zone_head.targets(sources)
        copies = len(embeddings)  # the same targets for each stacked copy of the batch
        rows = torch.cat([rows + i * len(audio) for i in range(copies)])
        return self.source_zone_head(torch.cat(embeddings), rows, classes.repeat(copies),
                                     zones.repeat(copies))

    def total(self, terms):
        """The loss: the terms weighed and added."""
        return sum(self.weights[name] * value for name, value in terms.items())
