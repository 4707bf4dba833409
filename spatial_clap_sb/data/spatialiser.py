"""Room simulation of a two-microphone pair: a cached bank of stereo room impulse responses.

Geometry: the pair lies on the x axis and faces +y. Channel 0 is the **left** microphone
(smaller x). A source at azimuth ``theta`` (degrees, -90 left, 0 front, +90 right) and
distance ``r`` sits at ``centre + r * (sin(theta), cos(theta), 0)``, so a source on the
left reaches channel 0 first, by ``spacing * sin(|theta|) / c`` seconds.

Rendering rooms (pyroomacoustics' image-source method in shoebox rooms) is done once per
configuration: the RIRs are stored in a bank on disk keyed by a hash of the
configuration, and mixing a scene is then a convolution. The reflection order is capped,
so rendering cost stays bounded whatever the reverberation time.

Example
-------
>>> from spatial_clap_sb.language import ZoneVocabulary
>>> config = SpatialiserConfig(n_rooms=1, positions_per_zone=1, max_order=2)
>>> bank = render_rir_bank(config, ZoneVocabulary.default(), seed=0)
>>> bank.rirs.shape[:3], bank.rirs.shape[3]
((1, 5, 1), 2)
"""
import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass

import numpy as np

from spatial_clap_sb.files import atomic_write_npz

logger = logging.getLogger(__name__)

SPEED_OF_SOUND = 343.0


@dataclass(frozen=True)
class SpatialiserConfig:
    """Ranges from which rooms, microphone pairs and source positions are drawn.

    Arguments
    ---------
    sample_rate : int
        Sample rate of the RIRs (Hz).
    mic_spacing : float
        Distance between the two microphones (m); about 17 cm is a head's width.
    room_size_min, room_size_max : tuple of float
        Shoebox dimensions (x width, y depth, z height) are drawn between these (m).
    rt60_range : tuple of float
        Reverberation time (s); turned into wall absorption by Sabine's formula (a
        draw shorter than a large room allows is raised to that room's shortest).
    distance_range : tuple of float
        Source-to-pair distance (m), shortened where the room is too small.
    max_order : int
        Cap on the image-source reflection order (bounds the rendering cost).
    rir_duration : float
        RIRs are truncated to this length (s); the late tail adds little at this scale.
    zone_margin : float
        Azimuths are drawn at least this far (degrees) inside their zone's edges, so that
        a source's zone is audible and not a coin toss at the border.
    wall_margin : float
        Minimum distance of sources and microphones from the walls (m).
    n_rooms : int
        Rooms in one bank.
    positions_per_zone : int
        Source positions rendered per zone and room.
    """

    sample_rate: int = 16000
    mic_spacing: float = 0.17
    room_size_min: tuple = (4.0, 4.0, 2.5)
    room_size_max: tuple = (9.0, 9.0, 3.5)
    rt60_range: tuple = (0.15, 0.6)
    distance_range: tuple = (1.0, 3.0)
    max_order: int = 10
    rir_duration: float = 0.3
    zone_margin: float = 3.0
    wall_margin: float = 0.4
    n_rooms: int = 16
    positions_per_zone: int = 6

    def to_dict(self):
        """Plain-JSON dict of the options."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, options):
        """Builds a config from a dict (lists become tuples)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v
                      for k, v in options.items()})


@dataclass
class RIRBank:
    """Stereo RIRs indexed by room, zone and position.

    Attributes
    ----------
    rirs : np.ndarray
        ``[n_rooms, n_zones, positions_per_zone, 2, rir_samples]`` float32, channel 0 left.
    azimuths, distances : np.ndarray
        ``[n_rooms, n_zones, positions_per_zone]`` source azimuth (degrees) and distance (m).
    rooms : list of dict
        Per room: ``size``, ``rt60`` and ``max_order``.
    zone_names : list of str
        Zone names in the order of the second axis.
    sample_rate : int
    """

    rirs: np.ndarray
    azimuths: np.ndarray
    distances: np.ndarray
    rooms: list
    zone_names: list
    sample_rate: int

    def save(self, path):
        """Saves the bank atomically to ``path`` (.npz)."""
        atomic_write_npz(path, rirs=self.rirs, azimuths=self.azimuths,
                         distances=self.distances, rooms=json.dumps(self.rooms),
                         zone_names=json.dumps(self.zone_names),
                         sample_rate=self.sample_rate)

    @classmethod
    def load(cls, path):
        """Loads a bank saved by :meth:`save`."""
        with np.load(path) as data:
            return cls(rirs=data["rirs"], azimuths=data["azimuths"],
                       distances=data["distances"], rooms=json.loads(str(data["rooms"])),
                       zone_names=json.loads(str(data["zone_names"])),
                       sample_rate=int(data["sample_rate"]))


def source_position(centre, azimuth, distance):
    """Position of a source at ``azimuth`` degrees and ``distance`` m from the pair centre.

    Example
    -------
    >>> np.round(source_position(np.zeros(3), -90.0, 2.0), 6)
    array([-2.,  0.,  0.])
    """
    theta = np.deg2rad(azimuth)
    return np.asarray(centre, dtype=float) + distance * np.array(
        [np.sin(theta), np.cos(theta), 0.0])


def mic_positions(centre, spacing):
    """``[3, 2]`` positions of the pair: column 0 is the left microphone."""
    offset = np.array([spacing / 2.0, 0.0, 0.0])
    return np.stack([centre - offset, centre + offset], axis=1)


def max_distance_in_room(centre, azimuth, room_size, wall_margin):
    """Largest distance at ``azimuth`` that keeps a source ``wall_margin`` from the walls."""
    theta = np.deg2rad(azimuth)
    direction = np.array([np.sin(theta), np.cos(theta)])
    limits = []
    for axis in range(2):
        if direction[axis] > 1e-9:
            limits.append((room_size[axis] - wall_margin - centre[axis]) / direction[axis])
        elif direction[axis] < -1e-9:
            limits.append((wall_margin - centre[axis]) / direction[axis])
    return max(min(limits), 0.0)


def _draw_room(rng, config):
    size = rng.uniform(config.room_size_min, config.room_size_max)
    rt60 = float(rng.uniform(*config.rt60_range))
    # The pair stands near the middle of the width, in the back half, facing the front.
    centre = np.array([
        size[0] / 2 + rng.uniform(-0.2, 0.2) * size[0] / 2,
        rng.uniform(config.wall_margin + 0.3, 0.4 * size[1]),
        rng.uniform(1.2, min(1.7, size[2] - config.wall_margin)),
    ])
    return size, rt60, centre


def _render_room(rng, config, zones, size, rt60, centre):
    import pyroomacoustics as pra

    # Sabine's formula cannot go below the reverberation time of fully absorbing walls
    # (pyroomacoustics raises there): a short draw in a large room is raised to it.
    volume = float(np.prod(size))
    surface = 2.0 * float(size[0] * size[1] + size[0] * size[2] + size[1] * size[2])
    shortest = 24.0 * np.log(10.0) * volume / (pra.constants.get("c") * surface)
    rt60 = float(max(rt60, 1.001 * shortest))
    absorption, sabine_order = pra.inverse_sabine(rt60, size)
    max_order = int(min(sabine_order, config.max_order))
    room = pra.ShoeBox(size, fs=config.sample_rate, materials=pra.Material(absorption),
                       max_order=max_order)
    room.add_microphone_array(mic_positions(centre, config.mic_spacing))
    n_pos = config.positions_per_zone
    azimuths = np.zeros((len(zones), n_pos))
    distances = np.zeros((len(zones), n_pos))
    for z, zone in enumerate(zones.zones):
        low = min(zone.low + config.zone_margin, zone.centre)
        high = max(zone.high - config.zone_margin, zone.centre)
        for p in range(n_pos):
            azimuth = float(rng.uniform(low, high))
            reach = max_distance_in_room(centre, azimuth, size, config.wall_margin)
            distance = min(float(rng.uniform(*config.distance_range)), reach)
            position = source_position(centre, azimuth, distance)
            position[2] = np.clip(position[2] + rng.uniform(-0.2, 0.2),
                                  config.wall_margin, size[2] - config.wall_margin)
            room.add_source(position)
            azimuths[z, p], distances[z, p] = azimuth, distance
    room.compute_rir()
    n_samples = int(round(config.rir_duration * config.sample_rate))
    rirs = np.zeros((len(zones), n_pos, 2, n_samples), dtype=np.float32)
    for mic in range(2):
        for index, rir in enumerate(room.rir[mic]):
            z, p = divmod(index, n_pos)
            length = min(len(rir), n_samples)
            rirs[z, p, mic, :length] = rir[:length]
    room_info = dict(size=[float(s) for s in size], rt60=rt60, max_order=max_order,
                     mic_centre=[float(c) for c in centre])
    return rirs, azimuths, distances, room_info


def render_rir_bank(config, zones, seed):
    """Renders a bank of stereo RIRs: ``n_rooms`` rooms, every zone, several positions.

    Arguments
    ---------
    config : SpatialiserConfig
        Ranges and sizes.
    zones : ZoneVocabulary
        Directions to cover.
    seed : int
        Seed of the rooms and positions (one seed per data split keeps test rooms unseen).

    Returns
    -------
    RIRBank
    """
    rng = np.random.default_rng(seed)
    rirs, azimuths, distances, rooms = [], [], [], []
    for _ in range(config.n_rooms):
        size, rt60, centre = _draw_room(rng, config)
        room_rirs, room_az, room_dist, info = _render_room(rng, config, zones, size,
                                                           rt60, centre)
        rirs.append(room_rirs)
        azimuths.append(room_az)
        distances.append(room_dist)
        rooms.append(info)
    return RIRBank(np.stack(rirs), np.stack(azimuths), np.stack(distances), rooms,
                   zones.names, config.sample_rate)


def bank_key(config, zones, seed):
    """Short hash of everything that determines a bank's contents."""
    options = dict(config=config.to_dict(), zones=zones.to_config(), seed=seed)
    return hashlib.sha1(json.dumps(options, sort_keys=True).encode()).hexdigest()[:12]


def rir_bank_path(cache_dir, config, zones, seed):
    """Where the bank of this configuration is cached."""
    return os.path.abspath(
        os.path.join(cache_dir, f"rir_bank_{bank_key(config, zones, seed)}.npz"))


def cached_rir_bank(cache_dir, config, zones, seed):
    """Loads the bank of this configuration from ``cache_dir``, rendering it if absent.

    Arguments
    ---------
    cache_dir : str
        Folder of cached banks (``rir_bank_<hash>.npz``).
    config : SpatialiserConfig
    zones : ZoneVocabulary
    seed : int

    Returns
    -------
    RIRBank
    """
    os.makedirs(cache_dir, exist_ok=True)
    path = rir_bank_path(cache_dir, config, zones, seed)
    if os.path.exists(path):
        return RIRBank.load(path)
    logger.info("Rendering %d rooms into %s", config.n_rooms, path)
    bank = render_rir_bank(config, zones, seed)
    bank.save(path)
    return bank
