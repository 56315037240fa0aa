"""Detector shards: how a dataset is split across `torchrun` ranks, and loading one rank's share.

A dataset's detectors, in panel order (site, then detector id), are cut into `n_shards` contiguous blocks
whose sizes differ by at most one (`partition`); contiguous blocks keep a site's approaches, and mostly its
neighbours, together. A rank owns `n_shards / world` of them. `load_shard` reads only what a rank needs:
the readings of its own detectors and of their spatial neighbours (the "halo": a sample reads its
neighbours' recent history), on the time grid of the whole dataset, so that every rank's rows line up.
The neighbours themselves are ranked over the whole network from the detector table (metadata only), so a
detector has the same neighbours in its shard as in a panel of the whole network.

Why logical shards rather than one per rank: the sampler draws each shard's share of every batch with the
shard's own seed (`shard_rng`, `quota`), so a run over 2 shards gives the same batches, and hence the same
model, on 1 rank as on 2 (see docs/SCALE.md, "Beyond one machine"). With one shard the draws are those the
single-process code always made.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from trafficcore.data.panel import Panel, detector_table, load_panel
from trafficcore.data.store import Store


@dataclass(frozen=True, eq=False)
class ShardInfo:
    """What a panel loaded by `load_shard` holds: which shards it owns, the whole network's detector order,
    and each owned detector's neighbours (as columns of this panel) per (k, method)."""

    n_shards: int
    shards: tuple[int, ...]
    detector_ids: tuple[str, ...]  # every detector of the dataset, in panel order (the global column order)
    owned: tuple[str, ...]  # this panel's own detectors; its other columns are the halo
    neighbours: Mapping[tuple[int, str], np.ndarray] = field(default_factory=dict)

    def neighbour_matrix(self, key: tuple[int, str]) -> np.ndarray:
        try:
            return self.neighbours[key]
        except KeyError:
            raise ValueError(f"this shard panel was loaded with neighbours {sorted(self.neighbours)}, not {key}: "
                             "pass the model's (n_neighbours, neighbour_method) to load_shard") from None


def partition(detector_ids: Sequence[str], n_shards: int) -> list[list[str]]:
    """`n_shards` contiguous blocks of the ids (in the order given), sizes differing by at most one."""
    if n_shards < 1:
        raise ValueError(f"the number of shards must be at least 1, not {n_shards}")
    if n_shards > len(detector_ids):
        raise ValueError(f"{n_shards} shards for {len(detector_ids)} detectors: use at most one shard per detector")
    return [list(map(str, a)) for a in np.array_split(np.asarray(list(detector_ids), dtype=object), n_shards)]


def quota(total: int, n_shards: int, shard: int) -> int:
    """Shard `shard`'s share of `total` (samples, validation samples): equal shares, the first ones one more."""
    return int(total) // n_shards + (shard < int(total) % n_shards)


def shard_rng(seed: int, shard: int, n_shards: int) -> np.random.Generator:
    """The random generator of one shard's draws: with one shard exactly `default_rng(seed)` (the draws of
    the single-process code), else a stream of its own for each (seed, n_shards, shard)."""
    return np.random.default_rng(int(seed) if n_shards == 1 else (int(seed), int(n_shards), int(shard)))


def owned_shards(rank: int, world: int, n_shards: int) -> list[int]:
    """The shards rank `rank` of `world` owns: a contiguous run of n_shards / world."""
    if n_shards % world:
        raise ValueError(f"{n_shards} shards cannot be shared by {world} ranks: use a multiple of {world}")
    per = n_shards // world
    return list(range(rank * per, (rank + 1) * per))


def shard_columns(panel: Panel, n_shards: int, shards: Iterable[int]) -> list[np.ndarray]:
    """The panel columns of each of these shards (in shard order). A panel of the whole network has every
    shard; a shard panel only those it was loaded for."""
    shards = list(shards)
    if panel.shard is not None:
        if panel.shard.n_shards != n_shards or not set(shards) <= set(panel.shard.shards):
            raise ValueError(f"this panel holds shards {list(panel.shard.shards)} of {panel.shard.n_shards}, "
                             f"not {shards} of {n_shards}")
        ids = panel.shard.detector_ids
    else:
        ids = tuple(panel.detectors["detector_id"])
    parts = partition(ids, n_shards)
    return [np.array([panel.column(d) for d in parts[k]], dtype=np.int64) for k in shards]


def owned_columns(panel: Panel) -> np.ndarray:
    """Columns of the detectors this panel owns (all of them for a panel of the whole network)."""
    if panel.shard is None:
        return np.arange(len(panel.detectors), dtype=np.int64)
    return np.array([panel.column(d) for d in panel.shard.owned], dtype=np.int64)


def load_shard(store: Store, dataset: str, shards: Iterable[int], n_shards: int,
               neighbours: Iterable[tuple[int, str]] = ((4, "graph"),), measure: str | None = None) -> Panel:
    """A panel of these shards' detectors plus their neighbours, reading only those detectors' observations.

    `neighbours`: the (k, method) neighbour lists the models will ask for (`WindowSpec.n_neighbours`,
    `.neighbour_method`); they are ranked over the whole network and kept on the panel (`Panel.shard`)."""
    shards = sorted(set(int(k) for k in shards))
    det_all = detector_table(store, dataset, measure)
    ids = list(det_all["detector_id"])
    parts = partition(ids, n_shards)
    if not shards or shards[0] < 0 or shards[-1] >= n_shards:
        raise ValueError(f"shards {shards} are not among 0..{n_shards - 1}")
    owned = [d for k in shards for d in parts[k]]
    meta = Panel(dataset=dataset, info=store.dataset_info(dataset), times=pd.DatetimeIndex([]), detectors=det_all,
                 values=np.empty((0, len(det_all)), dtype=np.float32), sites=pd.DataFrame(), events=pd.DataFrame(),
                 weather=pd.DataFrame(), adjacency=store.adjacency(dataset))
    pos = {d: i for i, d in enumerate(ids)}
    own_pos = np.array([pos[d] for d in owned], dtype=np.int64)
    ranked = {(int(k), str(m)): meta.neighbour_matrix(int(k), str(m))[own_pos] for k, m in neighbours}
    halo = {ids[j] for m in ranked.values() for j in m.ravel() if j >= 0} - set(owned)
    panel = load_panel(store, dataset, measure=measure, detectors=set(owned) | halo)
    local = {d: i for i, d in enumerate(panel.detectors["detector_id"])}
    own_local = np.array([local[d] for d in owned], dtype=np.int64)
    matrices = {}
    for key, m in ranked.items():
        out = np.full((len(local), key[0]), -1, dtype=np.int64)  # halo columns list no neighbours of their own
        out[own_local] = np.where(m >= 0, [[local[ids[j]] if j >= 0 else -1 for j in row] for row in m], -1)
        matrices[key] = out
    panel.shard = ShardInfo(n_shards, tuple(shards), tuple(ids), tuple(owned), matrices)
    return panel
