"""Scene mixer: k mono source clips, distinct zones and sounds, convolved with stereo RIRs.

A scene is drawn entirely from a ``numpy.random.Generator``, so a seed fixes it: which
clips, which room, which zone and position for each source, the levels and the time
offsets. All sources of a scene share one room. The clips of a scene describe different
sounds (:class:`MixingRule`), so that a caption and its permuted-direction twin never
describe the same scene. :meth:`SceneMixer.draw` returns the metadata alone (cheap);
:meth:`SceneMixer.render` turns it into audio, and :meth:`SceneMixer.render_batch` a
batch of them at once (what training does). Splitting the two lets prepare resume an
interrupted run without re-rendering finished scenes, and lets a training loader mix
scenes on the fly.

Example
-------
>>> import numpy as np
>>> from spatial_clap_sb.language import ZoneVocabulary
>>> from spatial_clap_sb.data.spatialiser import SpatialiserConfig, render_rir_bank
>>> from spatial_clap_sb.data.sources import SourceClip
>>> zones = ZoneVocabulary.default()
>>> bank = render_rir_bank(SpatialiserConfig(n_rooms=1, positions_per_zone=1,
...                                          max_order=1), zones, seed=0)
>>> clips = [SourceClip(f"c{i}", f"c{i}.wav", (f"sound {i}",), f"l{i}") for i in range(3)]
>>> audio = {c.clip_id: np.ones(16000, dtype=np.float32) for c in clips}
>>> mixer = SceneMixer(clips, bank, zones, load=audio.__getitem__)
>>> meta = mixer.draw(np.random.default_rng(0), n_sources=2)
>>> len({s["zone"] for s in meta["sources"]})
2
>>> mixer.render(meta).shape
(32000, 2)
>>> batch = mixer.render_batch([meta, mixer.draw(np.random.default_rng(1), n_sources=1)])
>>> batch.shape, bool(np.abs(batch[0] - mixer.render(meta)).max() < 1e-6)
((2, 32000, 2), True)
"""
from dataclasses import dataclass

import numpy as np
import scipy.fft
import torch

from spatial_clap_sb.language import N_PHRASINGS, scene_captions


@dataclass(frozen=True)
class MixerConfig:
    """How scenes are mixed.

    Arguments
    ---------
    scene_duration : float
        Length of every scene (s).
    level_range_db : tuple of float
        Each source's level relative to the others is drawn from this range (dB).
    source_rms : float
        RMS of a dry source at 0 dB before convolution.
    peak_limit : float
        A mixture whose peak exceeds this is scaled down to it (never clipped).
    sample_rate : int
        Sample rate of clips and RIRs (Hz).
    """

    scene_duration: float = 2.0
    level_range_db: tuple = (-6.0, 0.0)
    source_rms: float = 0.1
    peak_limit: float = 0.95
    sample_rate: int = 16000

    @property
    def n_samples(self):
        """Scene length in samples."""
        return int(round(self.scene_duration * self.sample_rate))


@dataclass(frozen=True)
class MixingRule:
    """Which clips may sound together in one scene.

    Two clips may not share a scene when they are the same clip, share a caption,
    have the same class label, or share a sound-event tag (the paper's rule for
    AudioCaps: AudioSet labels that do not overlap). Clips that carry neither a label
    nor tags (captioned corpora such as Clotho) fall back on their captions: with
    ``caption_embeddings``, two such clips whose captions lie at cosine similarity
    ``max_caption_similarity`` or above under a frozen sentence encoder are taken as
    the same sound.

    Arguments
    ---------
    caption_embeddings : dict, optional
        ``clip_id -> unit vector`` (the mean sentence embedding of the clip's
        captions) of the clips without label and tags.
    max_caption_similarity : float, optional
        The similarity from which two label-free clips count as the same sound.

    Example
    -------
    >>> from spatial_clap_sb.data.sources import SourceClip
    >>> rule = MixingRule()
    >>> dog = SourceClip("d", "d.wav", ("a dog barks",), tags=("Dog", "Bark"))
    >>> puppy = SourceClip("p", "p.wav", ("a puppy yaps",), tags=("Dog",))
    >>> rain = SourceClip("r", "r.wav", ("rain falls",), tags=("Rain",))
    >>> rule.may_mix(dog, [puppy]), rule.may_mix(dog, [rain])
    (False, True)
    """

    caption_embeddings: dict = None
    max_caption_similarity: float = None

    def may_mix(self, clip, chosen):
        """Whether ``clip`` may join the clips ``chosen`` for the same scene."""
        return not any(self.same_sound(clip, other) for other in chosen)

    def same_sound(self, a, b):
        """Whether two clips count as the same sound (see the class docstring)."""
        if a.clip_id == b.clip_id or set(a.captions) & set(b.captions):
            return True
        if a.label is not None and a.label == b.label:
            return True
        if set(a.tags) & set(b.tags):
            return True
        if self.max_caption_similarity is None or not self.caption_embeddings:
            return False
        va, vb = self.caption_embeddings.get(a.clip_id), self.caption_embeddings.get(b.clip_id)
        return va is not None and vb is not None and \
            float(np.dot(va, vb)) >= self.max_caption_similarity


class SceneMixer:
    """Draws and renders multi-source stereo scenes from clips and an RIR bank.

    Arguments
    ---------
    clips : list of SourceClip
        The source clips of one split.
    bank : RIRBank
        Stereo RIRs of this split's rooms.
    zones : ZoneVocabulary
        The zone vocabulary (same order as the bank's zone axis).
    load : callable
        ``load(clip_id) -> mono float32 array`` at the bank's sample rate.
    config : MixerConfig, optional
    rule : MixingRule, optional
        Which clips may share a scene (default: :class:`MixingRule` without caption
        similarity).
    rir_spectrum_cache_mb : float, optional
        Memory for the spectra of the RIRs already used (MiB): each is then
        transformed once rather than at every scene it sounds in (the default train
        bank's 720 stereo RIRs take 203 MiB). RIRs beyond it are transformed at each
        use; the scenes are the same either way.
    """

    def __init__(self, clips, bank, zones, load, config=None, rule=None,
                 rir_spectrum_cache_mb=512.0):
        self.clips = sorted(clips, key=lambda c: c.clip_id)
        self.by_id = {c.clip_id: c for c in self.clips}
        self.bank = bank
        self.zones = zones
        self.load = load
        self.config = config or MixerConfig(sample_rate=bank.sample_rate)
        self.rule = rule or MixingRule()
        # Convolution by FFT: long enough that the first n_samples of the product are
        # the linear convolution's (nothing wraps around into them).
        self._n_fft = scipy.fft.next_fast_len(
            self.config.n_samples + bank.rirs.shape[-1] - 1, real=True)
        spectrum_bytes = 2 * (self._n_fft // 2 + 1) * np.dtype(np.complex64).itemsize
        self._max_cached_spectra = int(rir_spectrum_cache_mb * 2**20 // spectrum_bytes)
        self._rir_spectra = {}
        if list(bank.zone_names) != zones.names:
            raise ValueError(
                f"The RIR bank covers zones {bank.zone_names} but the vocabulary is "
                f"{zones.names}: render the bank with the same vocabulary."
            )
        if self.config.sample_rate != bank.sample_rate:
            raise ValueError(
                f"Mixer sample rate {self.config.sample_rate} differs from the RIR "
                f"bank's {bank.sample_rate}."
            )

    def _pick_clips(self, rng, n_sources):
        """Picks ``n_sources`` clips of different sounds (see :class:`MixingRule`)."""
        order = rng.permutation(len(self.clips))
        chosen = []
        for index in order:
            clip = self.clips[index]
            if self.rule.may_mix(clip, chosen):
                chosen.append(clip)
                if len(chosen) == n_sources:
                    return chosen
        raise ValueError(
            f"A {n_sources}-source scene needs {n_sources} clips of different sounds "
            f"(labels, tags and captions); this split has only {len(chosen)} that may "
            "sound together."
        )

    def draw(self, rng, n_sources, language="train", n_captions=N_PHRASINGS):
        """Draws a scene's metadata (no audio).

        Arguments
        ---------
        rng : np.random.Generator
            The scene's own generator.
        n_sources : int
            Number of sources (at most the number of zones).
        language : str
            Language split of the captions: ``"train"`` (drawn from the training
            language), ``"template"`` (the template phrasings) or ``"heldout"``.
        n_captions : int
            Captions per scene (several phrasings of the same scene).

        Returns
        -------
        dict
            ``n_sources``, ``room`` (bank index), ``caption``, ``captions``,
            ``permuted_captions`` (each caption's permuted-assignment negatives),
            ``language`` and ``sources``: per source ``clip_id``, ``caption``,
            ``label``, ``zone``, ``azimuth``, ``distance``, ``level`` (dB) and
            ``position`` (index in the bank); ``seed_draw`` seeds the clips' time
            offsets at rendering.
        """
        if not 1 <= n_sources <= len(self.zones):
            raise ValueError(
                f"n_sources must be between 1 and the number of zones "
                f"({len(self.zones)}), got {n_sources}."
            )
        clips = self._pick_clips(rng, n_sources)
        zone_ids = rng.choice(len(self.zones), size=n_sources, replace=False)
        room = int(rng.integers(self.bank.rirs.shape[0]))
        levels = rng.uniform(*self.config.level_range_db, size=n_sources)
        levels -= levels.max()  # the loudest source sits at 0 dB
        sources = []
        for clip, zone_id, level in zip(clips, zone_ids, levels):
            position = int(rng.integers(self.bank.rirs.shape[2]))
            sources.append(dict(
                clip_id=clip.clip_id,
                caption=clip.captions[int(rng.integers(len(clip.captions)))],
                label=clip.label,
                **({"tags": list(clip.tags)} if clip.tags else {}),
                zone=self.zones.zones[zone_id].name,
                azimuth=round(float(self.bank.azimuths[room, zone_id, position]), 2),
                distance=round(float(self.bank.distances[room, zone_id, position]), 3),
                level=round(float(level), 2),
                position=position,
            ))
        seed_draw = int(rng.integers(2**31))
        captions, permuted = scene_captions(sources, rng, self.zones, language, n_captions)
        return dict(n_sources=n_sources, room=room, caption=captions[0],
                    captions=captions, permuted_captions=permuted, language=language,
                    sources=sources, seed_draw=seed_draw)

    def render(self, scene):
        """Renders a drawn scene to a stereo waveform ``[time, 2]`` (channel 0 left).

        The time offset of each clip is drawn from the scene's own ``seed_draw``, so
        rendering is deterministic and independent of other scenes.
        """
        return self.render_batch([scene])[0]

    def render_batch(self, scenes):
        """Renders drawn scenes to stereo waveforms ``[scenes, time, 2]`` in one pass.

        Every source of every scene is transformed in one batched FFT, multiplied by
        its RIR's spectrum and summed into its scene, and all scenes go back to time
        in one inverse FFT: for a training batch of 64 scenes about half the time of
        rendering them one by one. A scene sounds the same whatever batch it is
        rendered in, up to float rounding (the FFT of a batch rounds its rows a little
        differently from one row alone); the same batch gives the same bits.
        Returns float32 ``numpy`` audio, like :meth:`render`.
        """
        dry, rirs, owners = [], [], []
        for index, scene in enumerate(scenes):
            rng = np.random.default_rng(scene["seed_draw"])
            for source in scene["sources"]:
                signal = self._place(np.asarray(self.load(source["clip_id"]), np.float64),
                                     rng)
                signal *= self.config.source_rms * 10 ** (source["level"] / 20) / _rms(signal)
                dry.append(signal.astype(np.float32))
                rirs.append(self._rir_spectrum(scene["room"],
                                               self.zones.index(source["zone"]),
                                               source["position"]))
                owners.append(index)
        spectra = torch.fft.rfft(torch.from_numpy(np.stack(dry)), self._n_fft)
        mixed = spectra.new_zeros(len(scenes), 2, spectra.shape[-1])
        for spectrum, rir, owner in zip(spectra, rirs, owners):
            mixed[owner].addcmul_(spectrum, rir)
        mixtures = torch.fft.irfft(mixed, self._n_fft)[..., :self.config.n_samples]
        peaks = mixtures.abs().amax(dim=(1, 2), keepdim=True)
        limit = self.config.peak_limit
        mixtures = mixtures * torch.where(peaks > limit, limit / peaks, 1.0)
        return mixtures.transpose(1, 2).contiguous().numpy()

    def _rir_spectrum(self, room, zone_id, position):
        """The spectrum ``[2, n_fft // 2 + 1]`` of one stereo RIR of the bank.

        Kept once computed (up to the cache size): training draws every RIR of the
        bank many times, and transforming them was 45 % of rendering a scene.
        """
        key = (room, zone_id, position)
        spectrum = self._rir_spectra.get(key)
        if spectrum is None:
            rir = np.asarray(self.bank.rirs[room, zone_id, position], np.float32)
            spectrum = torch.fft.rfft(torch.from_numpy(rir), self._n_fft)
            if len(self._rir_spectra) < self._max_cached_spectra:
                self._rir_spectra[key] = spectrum
        return spectrum

    def _place(self, clip, rng):
        """Crops a long clip or pads a short one to the scene length at a random offset."""
        n_samples = self.config.n_samples
        if len(clip) >= n_samples:
            start = int(rng.integers(len(clip) - n_samples + 1))
            return clip[start:start + n_samples].copy()
        placed = np.zeros(n_samples)
        start = int(rng.integers(n_samples - len(clip) + 1))
        placed[start:start + len(clip)] = clip
        return placed


def _rms(signal):
    return max(float(np.sqrt(np.mean(signal ** 2))), 1e-8)
