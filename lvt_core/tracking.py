"""Lesion tracking across the studies of one patient, given in time order.

Each follow-up is registered to the previous study (:mod:`lvt_core.registration`). Lesions are
then matched pairwise by two cues measured in the previous study's space:

- overlap: the follow-up lesion's voxels mapped back into the previous study, as a fraction of
  the smaller lesion's volume (so growth and shrinkage do not hide a match);
- distance: between the mapped previous centroid and the follow-up centroid.

A pair is a candidate when ``overlap >= min_overlap`` or ``distance <= max_distance_mm``; a
Hungarian assignment on ``(1 - overlap) + distance / max_distance_mm`` picks one-to-one matches.
Leftover lesions that overlap a matched one become merges (previous side) or splits (follow-up
side); other leftovers are new or disappeared.

A registration that cannot be trusted (see :mod:`lvt_core.registration`) is replaced by the
scanner frame, and the result's ``warnings`` say so: a badly drawn liver must not turn
unchanged lesions into "disappeared" and "new" ones.

A lesion missed at one study (by the model, or hidden by a poor contrast phase) must not come
back as a "new" lesion, which RECIST reads as progression. So a follow-up lesion left over as
new is first offered, by the same cues and a second assignment, to the tracks that disappeared
at most ``max_gap`` studies before, measured through the composed registrations.

A lesion that disappears where the segmenter left fluid out (``TimepointInput.fluid_places``:
a place drawn as tumor that read as water in every phase of the day) may have turned cystic
under treatment, which the segmenter does not draw as a lesion; the result's ``warnings`` say
so, and that the CT needs a look before a response is read.

A track's ``status`` is its latest event: ``new`` (first seen at the latest timepoint, or at the
only one), ``persisting``, ``merged`` (it absorbed another track, or ended inside one —
``merged_into`` says which), ``split`` (it broke into pieces, or was born from one —
``split_from`` says which) or ``disappeared``. ``history`` keeps every event.

Clinician decisions come in as :class:`TrackOverrides`: forced links win over the automatic
assignment, excluded lesions ("not a lesion") take part in nothing, and ``previous_track_ids``
keeps numbers stable across re-runs. Without them, ids follow first appearance, so the same
inputs always give the same ids.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

import numpy as np
import SimpleITK as sitk
from scipy.optimize import linear_sum_assignment

from lvt_core.lesions import Lesion, component_array, extract_lesions, index_to_physical_matrix
from lvt_core.registration import RegistrationConfig, matrix_offset, register_followup_checked

LesionKey = tuple[int, int]
"""``(timepoint index, lesion id)``."""

Status = Literal["new", "persisting", "disappeared", "merged", "split"]
_BIG = 1e6


@dataclass
class TimepointInput:
    """One study: its label map, optional CT, date, lesions and (optionally) their id map."""

    labels: sitk.Image
    lesions: list[Lesion]
    image: sitk.Image | None = None
    date: date | None = None
    component_map: sitk.Image | None = None
    # places of the day the segmenter drew as tumor and then made background as fluid
    # (:meth:`lvt_core.fluid_places.FluidPlace.summary`: centre_mm, volume_ml, densest_hu)
    fluid_places: Sequence[Mapping[str, Any]] = ()

    @classmethod
    def from_labels(
        cls,
        labels: sitk.Image,
        image: sitk.Image | None = None,
        date: date | None = None,
        min_voxels: int = 10,
    ) -> TimepointInput:
        """Extract the lesions and keep the matching component map."""
        components = sitk.GetImageFromArray(component_array(labels, min_voxels))
        components.CopyInformation(labels)
        lesions = extract_lesions(labels, image, min_voxels, component_map=components)
        return cls(labels, lesions, image, date, components)


@dataclass(frozen=True)
class TrackingConfig:
    """Matching thresholds and the registration used between consecutive studies."""

    min_overlap: float = 0.1
    max_distance_mm: float = 15.0
    min_voxels: int = 10
    max_gap: int = 1  # studies a track may be missing from and still continue
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)


@dataclass
class TrackOverrides:
    """Clinician decisions kept by the store and fed to every run."""

    forced_links: Sequence[tuple[LesionKey, LesionKey]] = ()
    excluded: Collection[LesionKey] = ()
    previous_track_ids: Mapping[LesionKey, int] = field(default_factory=dict)


@dataclass
class Track:
    """Lesions at successive timepoints judged to be the same tumor."""

    track_id: int
    members: list[LesionKey]
    status: Status
    history: list[tuple[int, Status]]
    merged_into: int | None = None
    split_from: int | None = None

    def lesion_at(self, timepoint: int) -> int | None:
        """The member lesion id at ``timepoint``, if the track is present there."""
        return next((lid for t, lid in self.members if t == timepoint), None)


@dataclass
class Link:
    """An edge between lesions of consecutive timepoints, or across a gap (a match after a
    missed study, or a forced link)."""

    source: LesionKey
    target: LesionKey
    kind: Literal["match", "merge", "split", "forced"]
    overlap: float
    distance_mm: float


@dataclass
class TrackingResult:
    """Tracks, the links behind them, the registration of each consecutive pair, and warnings
    (registrations replaced by the scanner frame) for callers to show."""

    tracks: list[Track]
    links: list[Link]
    transforms: list[sitk.Transform]
    lesions: list[list[Lesion]]
    excluded: set[LesionKey]
    dates: list[date | None]
    warnings: list[str] = field(default_factory=list)

    def track_of(self, key: LesionKey) -> int | None:
        """Track id holding lesion ``key`` (``None`` for excluded lesions)."""
        for track in self.tracks:
            if key in track.members:
                return track.track_id
        return None

    def to_document(self, timepoint_names: Sequence[str]) -> dict[str, Any]:
        """The ``lvt track`` JSON document (ARCHITECTURE.md), with links and registrations."""
        owner = {key: t.track_id for t in self.tracks for key in t.members}
        return {
            "timepoints": [str(n) for n in timepoint_names],
            "dates": [d.isoformat() if d else None for d in self.dates],
            "lesions": [
                [
                    {
                        "id": lesion.id,
                        "centroid_mm": list(lesion.centroid_mm),
                        "longest_axial_diameter_mm": lesion.longest_axial_diameter_mm,
                        "short_axis_mm": lesion.short_axis_mm,
                        "volume_ml": lesion.volume_ml,
                        "voxels": lesion.voxels,
                        "track_id": owner.get((t, lesion.id)),
                        "excluded": (t, lesion.id) in self.excluded,
                    }
                    for lesion in lesions
                ]
                for t, lesions in enumerate(self.lesions)
            ],
            "tracks": [
                {
                    "track_id": track.track_id,
                    "members": [{"timepoint": t, "lesion_id": lid} for t, lid in track.members],
                    "status": track.status,
                    "history": [{"timepoint": t, "status": s} for t, s in track.history],
                    "merged_into": track.merged_into,
                    "split_from": track.split_from,
                }
                for track in self.tracks
            ],
            "links": [
                {
                    "from": {"timepoint": link.source[0], "lesion_id": link.source[1]},
                    "to": {"timepoint": link.target[0], "lesion_id": link.target[1]},
                    "kind": link.kind,
                    "overlap": link.overlap,
                    "distance_mm": link.distance_mm,
                }
                for link in self.links
            ],
            "registrations": [_transform_dict(t, i + 1) for i, t in enumerate(self.transforms)],
            "warnings": list(self.warnings),
        }


def _transform_dict(transform: sitk.Transform, timepoint: int) -> dict[str, Any]:
    matrix, offset = matrix_offset(transform)
    return {
        "from_timepoint": timepoint - 1,
        "to_timepoint": timepoint,
        "transform": transform.GetName(),
        "matrix": matrix.tolist() if matrix is not None else None,
        "offset_mm": offset.tolist(),
    }


@dataclass
class _Chain:
    """A track under construction (internal ids are list positions)."""

    members: list[LesionKey]
    history: list[tuple[int, Status]]
    merged_into: int | None = None
    split_from: int | None = None


def _pair_metrics(
    prev: TimepointInput,
    prev_components: np.ndarray,
    cur: TimepointInput,
    cur_components: np.ndarray,
    transform: sitk.Transform,
    prev_ids: list[int],
    cur_ids: list[int],
) -> tuple[np.ndarray, np.ndarray]:
    """(overlap fraction, centroid distance in mm), each of shape (len(prev_ids), len(cur_ids))."""
    matrix, offset = matrix_offset(transform)
    if matrix is None:
        raise ValueError(f"tracking needs a linear (rigid or affine) transform, got {transform.GetName()}")
    inverse = np.linalg.inv(matrix)
    overlap = np.zeros((len(prev_ids), len(cur_ids)))
    distance = np.full((len(prev_ids), len(cur_ids)), np.inf)
    if not prev_ids or not cur_ids:
        return overlap, distance
    prev_by_id = {lesion.id: lesion for lesion in prev.lesions}
    cur_by_id = {lesion.id: lesion for lesion in cur.lesions}
    prev_centroids = np.array([prev_by_id[i].centroid_mm for i in prev_ids], dtype=float)
    cur_centroids = np.array([cur_by_id[j].centroid_mm for j in cur_ids], dtype=float)
    mapped = prev_centroids @ matrix.T + offset
    distance = np.linalg.norm(mapped[:, None, :] - cur_centroids[None, :, :], axis=2)

    # Follow-up voxel (x, y, z) index -> follow-up physical -> previous physical -> previous index.
    cur_a, cur_o = index_to_physical_matrix(cur.labels)
    prev_a, prev_o = index_to_physical_matrix(prev.labels)
    prev_a_inv = np.linalg.inv(prev_a)
    total = prev_a_inv @ inverse @ cur_a
    shift = prev_a_inv @ (inverse @ (cur_o - offset) - prev_o)
    cur_voxel_ml = float(np.prod(cur.labels.GetSpacing())) / 1000.0
    zyx = np.argwhere(cur_components > 0)
    values = cur_components[zyx[:, 0], zyx[:, 1], zyx[:, 2]]
    xyz = np.rint(zyx[:, ::-1] @ total.T + shift).astype(np.int64)
    shape_xyz = np.array(prev_components.shape[::-1])
    inside = np.all((xyz >= 0) & (xyz < shape_xyz), axis=1)
    hits = prev_components[xyz[inside, 2], xyz[inside, 1], xyz[inside, 0]]
    values = values[inside]
    keep = hits > 0
    row_of = {lid: r for r, lid in enumerate(prev_ids)}
    col_of = {lid: c for c, lid in enumerate(cur_ids)}
    pairs, counts = np.unique(np.stack([hits[keep], values[keep]], axis=1), axis=0, return_counts=True)
    for (i, j), count in zip(pairs, counts, strict=True):
        r, c = row_of.get(int(i)), col_of.get(int(j))
        if r is None or c is None:
            continue
        smaller = min(prev_by_id[int(i)].volume_ml, cur_by_id[int(j)].volume_ml)
        overlap[r, c] = min(1.0, count * cur_voxel_ml / smaller) if smaller > 0 else 0.0
    return overlap, distance


def _match_cost(overlap: np.ndarray, distance: np.ndarray, config: TrackingConfig) -> np.ndarray:
    """Assignment cost of each pair; ``_BIG`` where neither cue makes it a candidate."""
    candidate = (overlap >= config.min_overlap) | (distance <= config.max_distance_mm)
    return np.where(candidate, (1.0 - overlap) + distance / config.max_distance_mm, _BIG)


def _components(tp: TimepointInput, min_voxels: int) -> np.ndarray:
    if tp.component_map is not None:
        return np.asarray(sitk.GetArrayViewFromImage(tp.component_map))
    return component_array(tp.labels, min_voxels)


def track_lesions(
    timepoints: Sequence[TimepointInput],
    config: TrackingConfig | None = None,
    overrides: TrackOverrides | None = None,
) -> TrackingResult:
    """Link the lesions of ``timepoints`` (time order) into tracks; see the module docstring."""
    config = config or TrackingConfig()
    overrides = overrides or TrackOverrides()
    excluded = {(int(t), int(i)) for t, i in overrides.excluded}
    forced = [
        ((int(a[0]), int(a[1])), (int(b[0]), int(b[1])))
        for a, b in overrides.forced_links
        if a not in excluded and b not in excluded
    ]
    for a, b in forced:
        if not 0 <= a[0] < b[0] < len(timepoints):
            raise ValueError(f"forced link {a} -> {b} must go forward in time between given studies")

    chains: list[_Chain] = []
    owner: dict[LesionKey, int] = {}
    links: list[Link] = []
    transforms: list[sitk.Transform] = []
    warnings: list[str] = []

    def ids_at(t: int) -> list[int]:
        return [lesion.id for lesion in timepoints[t].lesions if (t, lesion.id) not in excluded]

    def start(key: LesionKey, status: Status, split_from: int | None = None) -> None:
        chains.append(_Chain([key], [(key[0], status)], split_from=split_from))
        owner[key] = len(chains) - 1

    if not timepoints:
        return TrackingResult([], [], [], [], excluded, [])
    for lid in ids_at(0):
        start((0, lid), "new")
    components = [_components(timepoints[0], config.min_voxels)]

    for t in range(1, len(timepoints)):
        prev, cur = timepoints[t - 1], timepoints[t]
        components.append(_components(cur, config.min_voxels))
        registration = register_followup_checked(
            prev.labels, cur.labels, prev.image, cur.image, config.registration
        )
        transform = registration.transform
        transforms.append(transform)
        if registration.warning:
            warnings.append(
                f"registering {_name(cur, t)} to {_name(prev, t - 1)}: {registration.warning}"
            )
        prev_ids, cur_ids = ids_at(t - 1), ids_at(t)
        overlap, distance = _pair_metrics(
            prev, components[t - 1], cur, components[t], transform, prev_ids, cur_ids
        )
        row_of = {lid: r for r, lid in enumerate(prev_ids)}
        col_of = {lid: c for c, lid in enumerate(cur_ids)}
        cost = _match_cost(overlap, distance, config)

        assigned_rows: dict[int, int] = {}
        assigned_cols: dict[int, int] = {}  # column -> chain
        for a, b in forced:
            if b[0] != t or b[1] not in col_of or a not in owner:
                continue
            chain = owner[a]
            c = col_of[b[1]]
            if c in assigned_cols:
                continue
            assigned_cols[c] = chain
            prev_member = next((lid for tt, lid in chains[chain].members if tt == t - 1), None)
            if prev_member is not None and prev_member in row_of:
                assigned_rows[row_of[prev_member]] = c
            r = row_of.get(a[1]) if a[0] == t - 1 else None
            ov = float(overlap[r, c]) if r is not None else 0.0
            dist = float(distance[r, c]) if r is not None else float("nan")
            links.append(Link(a, b, "forced", ov, dist))

        free_rows = [r for r in range(len(prev_ids)) if r not in assigned_rows]
        free_cols = [c for c in range(len(cur_ids)) if c not in assigned_cols]
        if free_rows and free_cols:
            sub = cost[np.ix_(free_rows, free_cols)]
            rows, cols = linear_sum_assignment(sub)
            for rr, cc in zip(rows, cols, strict=True):
                if sub[rr, cc] >= _BIG:
                    continue
                r, c = free_rows[rr], free_cols[cc]
                assigned_rows[r] = c
                assigned_cols[c] = owner[(t - 1, prev_ids[r])]
                links.append(
                    Link(
                        (t - 1, prev_ids[r]),
                        (t, cur_ids[c]),
                        "match",
                        float(overlap[r, c]),
                        float(distance[r, c]),
                    )
                )

        for chain, c, source, ov, dist in _reconnect_across_gaps(
            chains, timepoints, components, transforms, t, cur_ids, assigned_cols, overlap, config
        ):
            assigned_cols[c] = chain
            links.append(Link(source, (t, cur_ids[c]), "match", ov, dist))

        events: dict[int, Status] = {}
        for c, chain in assigned_cols.items():
            key = (t, cur_ids[c])
            chains[chain].members.append(key)
            owner[key] = chain
            events[chain] = "persisting"

        # Leftover previous lesions overlapping a matched follow-up lesion: merges.
        for r, lid in enumerate(prev_ids):
            chain = owner[(t - 1, lid)]
            if r in assigned_rows or any(k[0] == t for k in chains[chain].members):
                continue
            c = int(np.argmax(overlap[r])) if len(cur_ids) else -1
            if c >= 0 and overlap[r, c] >= config.min_overlap and c in assigned_cols:
                target_chain = assigned_cols[c]
                chains[chain].merged_into = target_chain
                chains[chain].history.append((t, "merged"))
                events[target_chain] = "merged"
                links.append(
                    Link((t - 1, lid), (t, cur_ids[c]), "merge", float(overlap[r, c]), float(distance[r, c]))
                )
            else:
                chains[chain].history.append((t, "disappeared"))

        # Leftover follow-up lesions overlapping a matched previous lesion: splits; else new.
        for c, lid in enumerate(cur_ids):
            if c in assigned_cols:
                continue
            r = int(np.argmax(overlap[:, c])) if len(prev_ids) else -1
            if r >= 0 and overlap[r, c] >= config.min_overlap:
                parent = owner[(t - 1, prev_ids[r])]
                start((t, lid), "split", split_from=parent)
                events[parent] = "split"
                links.append(
                    Link((t - 1, prev_ids[r]), (t, lid), "split", float(overlap[r, c]), float(distance[r, c]))
                )
            else:
                start((t, lid), "new")
        for chain, status in events.items():
            chains[chain].history.append((t, status))

        # Chains alive at t-1 whose ending is not recorded yet (no lesion, no merge) disappear.
        for chain_index, chain in enumerate(chains):
            alive_before = any(k[0] == t - 1 for k in chain.members)
            present = any(k[0] == t for k in chain.members)
            ended = chain.history[-1][0] == t
            if alive_before and not present and not ended and chain_index not in events:
                chain.history.append((t, "disappeared"))

    tracks = _number_tracks(chains, overrides.previous_track_ids)
    warnings += _gone_into_fluid(tracks, timepoints, transforms, config.max_distance_mm)
    return TrackingResult(
        tracks=tracks,
        links=links,
        transforms=transforms,
        lesions=[list(tp.lesions) for tp in timepoints],
        excluded=excluded,
        dates=[tp.date for tp in timepoints],
        warnings=warnings,
    )


FLUID_WARNING_START = "track"
"""How a warning of a track gone where fluid was left out begins (registration warnings begin
with "registering"), so a page can tell the two apart."""


def _gone_into_fluid(tracks: Sequence[Track], timepoints: Sequence[TimepointInput],
                     transforms: Sequence[sitk.Transform], max_distance_mm: float) -> list[str]:
    """A warning for each track that disappeared where the segmenter left fluid out.

    The cross-phase reading makes a place that reads as water in every phase of a day
    background (the gallbladder, a cyst); a metastasis turned cystic under treatment reads so
    too. Its track then disappears, which a response would read as the lesion gone, so the
    clinician is told to look: the fluid's place lies within ``max_distance_mm`` of where the
    track's last lesion maps (through the registrations) in the study it disappeared from.
    """
    warnings = []
    for track in tracks:
        for t, status in track.history:
            places = timepoints[t].fluid_places
            before = [(tt, lid) for tt, lid in track.members if tt < t]
            if status != "disappeared" or not places or not before:
                continue
            last_t, last_id = max(before)
            lesion = next(x for x in timepoints[last_t].lesions if x.id == last_id)
            matrix, offset = matrix_offset(_compose(transforms[last_t:t]))
            assert matrix is not None
            there = np.asarray(lesion.centroid_mm) @ matrix.T + offset
            distance, place = min(((float(np.linalg.norm(np.subtract(p["centre_mm"], there))), p) for p in places),
                                  key=lambda item: item[0])
            if distance <= max_distance_mm:
                warnings.append(
                    f"{FLUID_WARNING_START} {track.track_id}'s lesion is not drawn at {_name(timepoints[t], t)}, "
                    f"but fluid of {place['volume_ml']:.1f} ml (at most {place['densest_hu']:.0f} HU in every "
                    f"phase) was left out {distance:.0f} mm from where it was: a lesion turned cystic is not "
                    "drawn as one; review the CT before reading a response")
    return warnings


def _name(timepoint: TimepointInput, index: int) -> str:
    """How a warning names a study: its index, and its date where known."""
    return f"timepoint {index}" + (f" ({timepoint.date.isoformat()})" if timepoint.date else "")


def _compose(transforms: Sequence[sitk.Transform]) -> sitk.Transform:
    """One affine transform applying ``transforms`` in order (each maps a study to the next)."""
    matrix, offset = np.eye(3), np.zeros(3)
    for transform in transforms:
        step_matrix, step_offset = matrix_offset(transform)
        assert step_matrix is not None  # _pair_metrics already refused non-linear transforms
        matrix, offset = step_matrix @ matrix, step_matrix @ offset + step_offset
    composed = sitk.AffineTransform(3)
    composed.SetMatrix(matrix.ravel().tolist())
    composed.SetTranslation(offset.tolist())
    return composed


def _reconnect_across_gaps(
    chains: list[_Chain],
    timepoints: Sequence[TimepointInput],
    components: list[np.ndarray],
    transforms: list[sitk.Transform],
    t: int,
    cur_ids: list[int],
    assigned_cols: Mapping[int, int],
    overlap_with_previous: np.ndarray,
    config: TrackingConfig,
) -> list[tuple[int, int, LesionKey, float, float]]:
    """``(chain, column, last member, overlap, distance)`` for leftover lesions at ``t`` that
    continue a track last seen 2 to ``max_gap + 1`` studies before.

    Leftovers overlapping a previous lesion are splits, not candidates; merged tracks ended for
    good. Each gap length is its own assignment, the shortest first.
    """
    free = [
        c for c in range(len(cur_ids))
        if c not in assigned_cols
        and not (overlap_with_previous.shape[0] and overlap_with_previous[:, c].max() >= config.min_overlap)
    ]
    found: list[tuple[int, int, LesionKey, float, float]] = []
    continued = set(assigned_cols.values())  # forced links may already continue a track
    for last_seen in range(t - 2, max(t - 2 - config.max_gap, -1), -1):
        dormant = [
            i for i, chain in enumerate(chains)
            if chain.members[-1][0] == last_seen and chain.merged_into is None and i not in continued
        ]
        if not dormant or not free:
            continue
        prev_ids = [chains[i].members[-1][1] for i in dormant]
        overlap, distance = _pair_metrics(
            timepoints[last_seen], components[last_seen], timepoints[t], components[t],
            _compose(transforms[last_seen:t]), prev_ids, [cur_ids[c] for c in free],
        )
        cost = _match_cost(overlap, distance, config)
        taken = set()
        for r, k in zip(*linear_sum_assignment(cost), strict=True):
            if cost[r, k] < _BIG:
                found.append((dormant[r], free[k], (last_seen, prev_ids[r]),
                              float(overlap[r, k]), float(distance[r, k])))
                taken.add(free[k])
        free = [c for c in free if c not in taken]
    return found


def _number_tracks(chains: list[_Chain], previous: Mapping[LesionKey, int]) -> list[Track]:
    """Public ids: reuse a previous run's id where a member had one, else fresh, in first-seen order."""
    order = sorted(range(len(chains)), key=lambda i: chains[i].members[0])
    previous = {(int(k[0]), int(k[1])): int(v) for k, v in previous.items()}
    next_id = max(previous.values(), default=0) + 1
    taken: set[int] = set()
    public: dict[int, int] = {}
    for i in order:  # first pass: keep previous ids, earliest claim wins
        for key in sorted(chains[i].members):
            old = previous.get(key)
            if old is not None and old not in taken:
                public[i] = old
                taken.add(old)
                break
    for i in order:
        if i not in public:
            while next_id in taken:
                next_id += 1
            public[i] = next_id
            taken.add(next_id)
    tracks = []
    for i in order:
        chain = chains[i]
        tracks.append(
            Track(
                track_id=public[i],
                members=list(chain.members),
                status=chain.history[-1][1],
                history=list(chain.history),
                merged_into=public.get(chain.merged_into) if chain.merged_into is not None else None,
                split_from=public.get(chain.split_from) if chain.split_from is not None else None,
            )
        )
    return tracks
