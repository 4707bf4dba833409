"""The Spatial-CLAP towers: stereo audio -> joint space, text -> joint space.

Audio tower (:class:`SpatialAudioEncoder`)::

    stereo [B, T, 2] --(L+R)/2--> content encoder ---------> content frames --+
          |                                      |                            |
          +------------> spatial CRNN <--(conditioning, if content-aware)     |
                              |                                               v
                              +--------------> spatial frames --> fusion --> attention
                                                                   pooling --> projection

Text tower (:class:`TextTower`): transformers encoder, pooling, projection; optionally
each "sound + direction" clause on its own, averaged (``compose_clauses``). Both
outputs are L2-normalised; :class:`LearnableTemperature` holds CLAP's logit scale.

Every part is a constructor argument, so a HyperPyYAML file assembles the variant:
``use_spatial_stream: False`` is the mono ablation, ``content_aware: False`` on the CRNN
the not-content-aware one.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from spatial_clap_sb.language import (
    ZoneVocabulary,
    caption_clause_pieces,
    training_pieces,
)
from spatial_clap_sb.models.blocks import frame_mask
from spatial_clap_sb.models.features import mid_signal
from spatial_clap_sb.models.text import check_captions


class SpatialAudioEncoder(nn.Module):
    """Content-aware spatial audio encoder.

    Arguments
    ---------
    content_encoder : nn.Module
        ``forward(mid [B, T], lengths) -> [B, Tc, Dc]`` with ``output_dim``.
    spatial_encoder : nn.Module or None
        ``forward(wavs [B, T, 2], content_frames, lengths) -> [B, Ts, Ds]`` with
        ``output_dim``; None for a mono (content-only) model.
    use_spatial_stream : bool
        False drops ``spatial_encoder`` (the mono ablation, switchable from YAML).
    fusion : nn.Module
        ``forward(content, spatial) -> frames`` with ``output_dim``.
    pooling : nn.Module
        ``forward(frames, mask) -> [B, pooled]`` with ``output_dim``.
    projection : nn.Module
        ``[B, pooled] -> [B, embedding]``, L2-normalised.
    """

    def __init__(self, content_encoder, spatial_encoder, fusion, pooling, projection,
                 use_spatial_stream=True):
        super().__init__()
        self.content_encoder = content_encoder
        self.spatial_encoder = spatial_encoder if use_spatial_stream else None
        self.fusion = fusion
        self.pooling = pooling
        self.projection = projection

    def forward(self, wavs, lengths=None, content_frames=None):
        """Embeds stereo audio.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[batch, time, 2]``, channel 0 left.
        lengths : torch.Tensor, optional
            ``[batch]`` relative lengths.
        content_frames : torch.Tensor, optional
            ``[batch, frames, content dim]``: the content encoder's output on these
            signals, computed before (a frozen pretrained encoder's cached features);
            the content encoder is then not run.

        Returns
        -------
        torch.Tensor
            ``[batch, embedding_dim]``, unit norm.
        """
        if wavs.dim() != 3 or wavs.shape[-1] != 2:
            raise ValueError(
                f"Spatial-CLAP needs stereo audio [batch, time, 2] (channel 0 left), got "
                f"shape {tuple(wavs.shape)}."
            )
        if content_frames is None:
            content_frames = self.content_encoder(mid_signal(wavs), lengths)
        content = content_frames
        spatial = None
        if self.spatial_encoder is not None:
            spatial = self.spatial_encoder(wavs, content, lengths)
        frames = self.fusion(content, spatial)
        return self.projection(self.pooling(frames, frame_mask(lengths, frames.shape[1])))

    def pretrained_parameters(self):
        """Trainable parameters of a pretrained content encoder (for a lower LR)."""
        getter = getattr(self.content_encoder, "pretrained_parameters", None)
        return list(getter()) if getter else []


class TextTower(nn.Module):
    """Text encoder plus projection into the joint space.

    Arguments
    ---------
    text_encoder : nn.Module
        ``forward(list of str) -> [B, output_dim]``.
    projection : nn.Module
        ``[B, output_dim] -> [B, embedding]``, L2-normalised.
    compose_clauses : bool
        False embeds each caption as one sentence. True splits a scene caption into
        its "sound + direction" clauses
        (:func:`~spatial_clap_sb.language.caption_clause_pieces`), embeds each
        clause (its pieces, the text between punctuation and joiner words, through the
        transformer one by one and pooled together) and returns their normalised mean: a scene is the sum of its sources, whatever
        their number or the order the caption names them in. A sentence tower learns
        binding from where the clauses of two-source captions sit and does not carry it
        over to three sources; the composed tower does by construction. A caption
        without that structure is one clause, embedded as is.
    zones : ZoneVocabulary or list of dict, optional
        The zone vocabulary whose phrases anchor the clauses (default: five zones).
    split_roles : bool
        With ``compose_clauses``: a piece holding both a sound and a direction is read
        as two texts, the sound and the direction, so that a sound's token states are
        the same in every clause form, wording and frame (and the cache holds sounds and
        wordings, not their combinations). False by default, so that a model folder
        exported without the key reads captions as it was trained; the model file
        (``text_split_roles``) sets True.
    piece_join_prob : float
        In training only, with ``compose_clauses``: the chance that two neighbouring
        pieces of a clause are read as one text
        (:func:`~spatial_clap_sb.language.join_neighbour_pieces`), as the clause
        finder leaves them around words it does not know. Decided per caption from
        its text, so a run resumes exactly. Evaluation and inference never join.
    filler_prob : float
        In training only, with ``compose_clauses``: the chance that a piece is read
        with a filler glued before or after it ("clearly", "we notice";
        :func:`~spatial_clap_sb.language.glue_fillers`), as words the clause finder
        does not know stay glued to a sound or a direction. Decided per caption from
        its text, like ``piece_join_prob``; evaluation and inference never glue.

    Example
    -------
    >>> from spatial_clap_sb.models.fusion import ProjectionHead
    >>> from spatial_clap_sb.models.text import TextEncoder
    >>> tower = TextTower(TextEncoder(), ProjectionHead(384, 8), compose_clauses=True)
    >>> tower(["a dog barks on the left and a bell rings on the right"]).shape
    torch.Size([1, 8])
    """

    def __init__(self, text_encoder, projection, compose_clauses=False, zones=None,
                 split_roles=False, piece_join_prob=0.0, filler_prob=0.0):
        super().__init__()
        self.text_encoder = text_encoder
        self.projection = projection
        self.compose_clauses = bool(compose_clauses)
        self.split_roles = bool(split_roles)
        self.piece_join_prob = float(piece_join_prob)
        self.filler_prob = float(filler_prob)
        self.zones = ZoneVocabulary.from_config(zones)

    def clause_pieces(self, caption):
        """The texts the encoder reads for a caption: one list of pieces per clause."""
        if not self.compose_clauses:
            return [[caption]]
        return caption_clause_pieces(caption, self.zones, split_roles=self.split_roles)

    def forward(self, captions):
        """``captions`` (list of str) -> unit-norm ``[batch, embedding_dim]``."""
        if not self.compose_clauses:
            return self.projection(self.text_encoder(captions))
        check_captions(captions)
        clauses = [[tuple(pieces) for pieces in self._training_pieces(caption)]
                   for caption in captions]
        unique = list(dict.fromkeys(c for caption in clauses for c in caption))
        encoded = self.projection(self.text_encoder.forward_joined(unique))  # once each
        row = {clause: i for i, clause in enumerate(unique)}
        rows = [row[c] for caption in clauses for c in caption]
        owners = [i for i, caption in enumerate(clauses) for _ in caption]
        # One scatter-add, not a sum per caption (15x cheaper with its backward).
        sums = encoded.new_zeros(len(captions), encoded.shape[1]).index_add(
            0, torch.tensor(owners, device=encoded.device),
            encoded[torch.tensor(rows, device=encoded.device)])
        return F.normalize(sums, dim=-1)

    def _training_pieces(self, caption):
        """:meth:`clause_pieces`, with neighbours joined and fillers glued at random
        when training."""
        pieces = self.clause_pieces(caption)
        if not self.training:
            return pieces
        return training_pieces(pieces, caption, self.piece_join_prob, self.filler_prob)

    def pretrained_parameters(self):
        """Trainable parameters of the pretrained text model (for a lower LR)."""
        return list(self.text_encoder.pretrained_parameters())


class LearnableTemperature(nn.Module):
    """CLAP's learnable logit scale, stored as a log and clamped.

    Arguments
    ---------
    initial_temperature : float
        Start value of the temperature (0.07 in CLIP/CLAP).
    max_scale : float
        Upper bound of the logit scale (100 in CLIP).

    Example
    -------
    >>> round(float(LearnableTemperature(0.07)().detach()), 3)
    14.286
    """

    def __init__(self, initial_temperature=0.07, max_scale=100.0):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / initial_temperature)))
        self.max_log_scale = math.log(max_scale)

    def forward(self):
        """The current logit scale ``exp(log_scale)``, clamped to ``max_scale``."""
        return self.log_scale.clamp(max=self.max_log_scale).exp()
