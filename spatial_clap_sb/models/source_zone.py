"""SELD-style auxiliary head: for every known sound class, which zone it is in.

A linear read-out of the joint embedding gives, per sound class of the training data,
logits over the zones; the loss asks, for every labelled source of a scene, that its
class's read-out name its zone. It is the per-class direction target of sound event
localisation and detection (SELD), used here as an auxiliary of contrastive training:
it tells the audio tower directly *which* sound is *where*, which the contrastive
losses teach only through the text tower. Applied to the text embeddings too (the head
is shared), it asks both towers to write the same class-by-zone code into the joint
space.

Training-only: the head is checkpointed with the run but not exported.
"""
import numpy as np
import torch
from torch import nn

from spatial_clap_sb.language import permuted_assignments
from spatial_clap_sb.losses import global_mean_cross_entropy


def source_classes(source):
    """The classes a source counts as: its tags (e.g. AudioSet labels), else its label;
    none for a source with neither (never one class per clip or caption).

    Example
    -------
    >>> source_classes({"label": "dog", "caption": "a dog barks"})
    ('dog',)
    >>> source_classes({"tags": ["/m/0bt9lr", "/m/05tny_"], "label": None})
    ('/m/0bt9lr', '/m/05tny_')
    >>> source_classes({"label": None, "clip_id": "c7", "caption": "a dog barks"})
    ()
    """
    if source.get("tags"):
        return tuple(str(tag) for tag in source["tags"])
    if source.get("label") is not None:
        return (str(source["label"]),)
    return ()


class SourceZoneHead(nn.Module):
    """Per-class zone logits read linearly from unit-norm embeddings.

    Arguments
    ---------
    labels : list of str
        The sound classes of the training data (see :func:`source_classes`).
    zone_names : list of str
        The zone vocabulary's names, left to right.
    embedding_dim : int
        Size of the joint embedding.
    scale : float
        Embeddings are unit-norm; they are multiplied by this before the read-out so
        that the logits are not squashed near zero.

    Example
    -------
    >>> head = SourceZoneHead(["dog", "car"], ["left", "right"], embedding_dim=4)
    >>> rows, classes, zones = head.targets(
    ...     [[{"label": "dog", "zone": "left"}, {"label": "car", "zone": "right"}]])
    >>> rows.tolist(), classes.tolist(), zones.tolist()
    ([0, 0], [1, 0], [0, 1])
    >>> head(torch.randn(1, 4), rows, classes, zones).shape
    torch.Size([])
    """

    def __init__(self, labels, zone_names, embedding_dim=512, scale=10.0):
        super().__init__()
        self.labels = sorted(set(labels))
        if not self.labels:
            raise ValueError("SourceZoneHead needs at least one class label.")
        self.zone_names = list(zone_names)
        self._label_index = {label: i for i, label in enumerate(self.labels)}
        self._zone_index = {name: i for i, name in enumerate(self.zone_names)}
        self.scale = scale
        self.readout = nn.Linear(embedding_dim, len(self.labels) * len(self.zone_names))

    def targets(self, sources_batch):
        """Flattens the classes of a batch's sources into index tensors (a source with
        several tags gives one target per tag).

        Arguments
        ---------
        sources_batch : list of list of dict
            Per scene, its sources (``zone`` and a label or tags).

        Returns
        -------
        rows, classes, zones : torch.Tensor
            ``[N]`` long tensors: embedding row, class index and zone index of each
            class of a source known to the head (unknown classes are skipped).
        """
        rows, classes, zones = [], [], []
        for row, sources in enumerate(sources_batch):
            for source in sources:
                if source.get("zone") not in self._zone_index:
                    continue
                for name in source_classes(source):
                    label = self._label_index.get(name)
                    if label is None:
                        continue
                    rows.append(row)
                    classes.append(label)
                    zones.append(self._zone_index[source["zone"]])
        as_long = lambda values: torch.tensor(values, dtype=torch.long)  # noqa: E731
        return as_long(rows), as_long(classes), as_long(zones)

    def logits(self, embeddings):
        """``[B, n_classes, n_zones]`` zone logits of every class."""
        logits = self.readout(self.scale * embeddings)
        return logits.view(len(embeddings), len(self.labels), len(self.zone_names))

    def assignment_scores(self, embeddings, sources_batch):
        """Read-out scores of each scene's true class-to-zone assignment and the others.

        The score of an assignment is the sum over the scene's sources of the log
        probability that the source's class sits in the assigned zone; with
        :func:`spatial_clap_sb.metrics.assignment_accuracy` this scores a head as the
        recipe scores captions. Every scene needs the same number (>= 2) of sources of
        known classes.

        Arguments
        ---------
        embeddings : torch.Tensor
            ``[B, D]`` unit-norm embeddings.
        sources_batch : list of list of dict

        Returns
        -------
        true_scores : np.ndarray
            ``[B]``.
        permuted_scores : np.ndarray
            ``[B, k! - 1]`` for ``k`` sources per scene.
        """
        log_probs = self.logits(embeddings).log_softmax(-1).detach().cpu().numpy()

        def score(row, sources):
            return float(sum(row[self._label_index[name], self._zone_index[s["zone"]]]
                             for s in sources for name in source_classes(s)))

        scenes = list(zip(log_probs, sources_batch))
        true_scores = [score(row, sources) for row, sources in scenes]
        permuted_scores = [[score(row, swapped) for swapped in permuted_assignments(sources)]
                           for row, sources in scenes]
        return np.array(true_scores), np.array(permuted_scores)

    def forward(self, embeddings, rows, classes, zones):
        """Mean cross-entropy of the zone of each ``(row, class)`` target.

        Arguments
        ---------
        embeddings : torch.Tensor
            ``[B, D]`` unit-norm embeddings.
        rows, classes, zones : torch.Tensor
            From :meth:`targets`.

        Returns
        -------
        torch.Tensor
            Scalar loss (a zero in the graph when there is no target).
        """
        logits = self.logits(embeddings)
        if len(rows) == 0 and not torch.distributed.is_initialized():
            return logits.sum() * 0.0
        device = embeddings.device
        picked = logits[rows.to(device), classes.to(device)]
        # Mean over the targets of every rank (they hold different numbers of them).
        return global_mean_cross_entropy(picked, zones.to(device))
