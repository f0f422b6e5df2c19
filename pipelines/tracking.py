"""Stage 2b: one face track per clip. Detect once, then let each frame's landmarks place the next
frame's search box; re-detect when the track weakens. A break in the track splits the clip.

Frames arrive as a stream (any iterable), so a long video never has to be held whole: the tracker
keeps only the frames it may still need (those not yet confirmed by a detector run, and the first
frame of each track, on which the primary-face filter computes the track's identity)."""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from pipelines.align import alignment_frame
from pipelines.config import PreprocessConfig
from pipelines.decode import Reject
from pipelines.landmarks import FaceLandmarker, box_iou


def landmark_frame(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """(centre, scale) of a 68-point shape from eyes and mouth (as the crop, see align.py): the scale is
    the larger of 2 x eye distance and 1.8 x eye-to-mouth distance, which changes little as the head turns."""
    frame = alignment_frame(landmarks[None])[0]
    return frame[:2], float(np.linalg.norm(frame[2:]))


def landmark_centres(landmarks: np.ndarray) -> np.ndarray:
    """(N, 2) centres of (N, 68, 2) shapes, as landmark_frame's (one call for a window of frames)."""
    return alignment_frame(landmarks)[:, :2]


@dataclass
class BoxModel:
    """Where the detector put its box relative to the landmarks at the last detection (the anchor).
    Tracked boxes keep the anchor box's size and follow the landmark centre, so that they look like
    detector boxes to the landmark regressor and landmark errors cannot feed back into the box size."""

    offset: np.ndarray  # (2,) box centre - landmark centre, pixels
    size: np.ndarray  # (2,) box width, height, pixels
    scale: float  # landmark scale at the anchor

    @classmethod
    def calibrate(cls, box: np.ndarray, landmarks: np.ndarray) -> "BoxModel":
        centre, scale = landmark_frame(landmarks)
        return cls(offset=(box[:2] + box[2:]) / 2 - centre, size=box[2:] - box[:2], scale=scale)

    def box(self, landmarks: np.ndarray, velocity=np.zeros(2)) -> np.ndarray:
        return self.box_at(landmark_frame(landmarks)[0], velocity)

    def box_at(self, centres: np.ndarray, velocity=np.zeros(2)) -> np.ndarray:
        """(..., 4) boxes of landmark centres (..., 2) moved by `velocity`."""
        centres = centres + self.offset + velocity
        return np.concatenate([centres - self.size / 2, centres + self.size / 2], axis=-1).astype(np.float32)


@dataclass
class TrackStats:
    detections: int = 0  # full-frame detector runs
    verifications: int = 0  # local detector checks of a tracked face
    faces_seen: int = 0  # frames where a face was found (any size)
    faces_too_small: int = 0


@dataclass
class _Track:
    positions: list = field(default_factory=list)  # indices into the decoded frames
    landmarks: list = field(default_factory=list)
    confirmed: int = 0  # frames up to the last one a detector run confirmed
    pending: dict = field(default_factory=dict)  # position -> frame, for frames not yet confirmed

    def add(self, position, frame, landmarks, confirmed: bool):
        self.positions.append(position)
        self.landmarks.append(landmarks)
        if confirmed:
            self.confirmed, self.pending = len(self.positions), {}
        else:
            self.pending[position] = frame.copy()  # a copy: a view would keep its whole decode chunk

    def drop_unconfirmed(self):
        del self.positions[self.confirmed :], self.landmarks[self.confirmed :]
        self.pending = {}


def face_size(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], box[3] - box[1]))


def _plausible_step(
    previous_centre: np.ndarray, centre: np.ndarray, scale: float, model: BoxModel, max_scale_jump: float
) -> bool:
    """The tracked face (landmark centre and scale of this frame) kept its size (relative to the anchor)
    and did not jump from the previous frame's landmark centre."""
    ratio = scale / model.scale
    moved = np.linalg.norm(centre - previous_centre) / model.scale
    return 1 / max_scale_jump <= ratio <= max_scale_jump and moved < 0.5


class FaceTracker:
    detection_batch = 64  # frames per landmark batch without tracking (bounds the frames held)
    RECENTRE_PASSES = 2  # re-centred landmark runs at most, per frame

    def __init__(self, landmarker: FaceLandmarker, cfg: PreprocessConfig):
        self.landmarker = landmarker
        self.cfg = cfg
        # Frames followed per landmark batch: only backends that batch gain from windows (dlib does not).
        self.window = cfg.track_window if landmarker.batches_frames else 1

    def _track_window(self, window, history, model, since_check):
        """Follow the face through `window` (a list of (position, index, frame), consecutive frames)
        from the last landmarks in `history`. Returns (results, model, since_check, stop): results holds
        (landmarks, confirmed) for the frames followed, in order; stop is None when the whole window was
        followed, "weak" when the next frame's step was implausible and "lost" when the detector found no
        face there (the unconfirmed frames before it are suspect too); that frame is not in results.

        Every frame's box is a constant-velocity guess from the window's start, so the landmark model runs
        on all the window's frames at once (a batch for FAN); a frame whose landmarks land away from its
        box runs again on the box centred on them (at most RECENTRE_PASSES times), and one still away
        ends the window before it. Every `verify_every` frames a detector run on
        the region around the face confirms the track and re-anchors it on the detector's box, so drift
        cannot build up; the frames after it in the window keep their boxes from the old anchor."""
        previous_centre = landmark_frame(history[-1])[0]
        velocity = previous_centre - landmark_frame(history[-2])[0] if len(history) > 1 else np.zeros(2)
        frames = [frame for _, _, frame in window]
        guesses = np.stack([model.box_at(previous_centre, velocity * (step + 1)) for step in range(len(window))])
        boxes, landmarks = guesses, self.landmarker.landmarks_many(frames, guesses)
        for _ in range(self.RECENTRE_PASSES):
            off = self._off_centre(boxes, landmarks, model)
            if not off.any():
                break
            boxes[off] = model.box_at(landmark_centres(landmarks[off]))
            landmarks[off] = self.landmarker.landmarks_many([f for f, o in zip(frames, off) if o], boxes[off])
        # Landmarks still away from their box (a guess too far off to recover from) end the window
        # there: that frame starts the next window, with a guess from its predecessor's landmarks.
        off = self._off_centre(boxes, landmarks, model)
        settled = int(np.argmax(off[1:])) + 1 if off[1:].any() else len(window)
        results = []
        for frame, points in zip(frames[:settled], landmarks[:settled]):
            centre, scale = landmark_frame(points)
            if not _plausible_step(previous_centre, centre, scale, model, self.cfg.max_scale_jump):
                return results, model, since_check, "weak"
            confirmed = since_check >= self.cfg.verify_every
            if confirmed:
                self.stats.verifications += 1
                box = self.landmarker.detect_near(frame, model.box(points))
                if box is None:
                    return results, model, since_check, "lost"
                points = self.landmarker.landmarks(frame, box[None])[0]
                model = BoxModel.calibrate(box, points)
                centre = landmark_frame(points)[0]
            since_check = 0 if confirmed else since_check + 1
            results.append((points, confirmed))
            previous_centre = centre
        return results, model, since_check, None

    def _detect_step(self, frame, previous_box):
        """(box, landmarks) of the face to follow: the one continuing the track, else the largest."""
        self.stats.detections += 1
        boxes = self.landmarker.detect(frame)
        if len(boxes) == 0:
            return None, None, False
        continues = False
        chosen = boxes[0]
        if previous_box is not None:
            overlaps = [box_iou(box, previous_box) for box in boxes]
            best = int(np.argmax(overlaps))
            if overlaps[best] > 0.3:
                chosen, continues = boxes[best], True
        return chosen, self.landmarker.landmarks(frame, chosen[None])[0], continues

    def track(self, frames, indices=None, stride: int = 1) -> tuple[list[tuple[np.ndarray, np.ndarray]], TrackStats]:
        """Face tracks as (positions (n,), landmarks (n, 68, 2)), in frame order, before length filtering.
        frames: an iterable of (h, w, 3) frames; positions count them from 0. indices: their source
        indices (an iterable as long), where a step above `stride` (frames lost in decoding) ends every
        track. `self.start_frames` maps each track's first position to its frame afterwards."""
        pairs = zip(indices, frames) if indices is not None else enumerate(frames)
        return self.track_pairs(pairs, stride)

    def track_pairs(self, pairs, stride: int = 1):
        """As track(), from an iterable of (source index, frame)."""
        self.stats = TrackStats()
        self.start_frames = {}
        frames = ((position, index, frame) for position, (index, frame) in enumerate(pairs))
        if not self.cfg.tracking:
            return self._track_by_detection(frames, stride), self.stats
        tracks, current, model, since_check, previous_index = [], None, None, 0, None
        frames, waiting, detect_next = iter(frames), deque(), False
        while True:
            want = self.window if current is not None and not detect_next else 1
            waiting.extend(itertools.islice(frames, max(0, want - len(waiting))))
            if not waiting:
                break
            position, index, frame = waiting[0]
            if previous_index is not None and index - previous_index > stride:
                current = self._close(tracks, current)  # frames were lost in between
            if current is not None and not detect_next:
                window = self._consecutive(waiting, index, want, stride)
                results, model, since_check, stop = self._track_window(window, current.landmarks[-2:], model, since_check)
                for (position, index, frame), (landmarks, confirmed) in zip(window, results):
                    current.add(position, frame, landmarks, confirmed)
                    waiting.popleft()
                    previous_index = index
                if stop == "lost":  # never keep landmarks that may have left the face
                    self._recheck_unconfirmed(current, model)
                    current = self._close(tracks, current)
                detect_next = stop is not None  # the frame where the track weakened or was lost
                continue
            detect_next = False
            waiting.popleft()
            previous_index = index
            previous_box = model.box(current.landmarks[-1]) if current is not None else None
            box, landmarks, continues = self._detect_step(frame, previous_box)
            if box is not None:
                self.stats.faces_seen += 1
                if face_size(box) < self.cfg.min_face_size:
                    self.stats.faces_too_small += 1
                    box = None
            if box is None:
                current = self._close(tracks, current)
                continue
            if not continues:
                current = self._close(tracks, current)
            model, since_check = BoxModel.calibrate(box, landmarks), 0
            if current is None:
                current = _Track()
                self.start_frames[position] = frame.copy()
            current.add(position, frame, landmarks, confirmed=True)  # a detection confirms like a verification
        self._close(tracks, current)
        return tracks, self.stats

    def _off_centre(self, boxes: np.ndarray, landmarks: np.ndarray, model: BoxModel) -> np.ndarray:
        """(N,) bool: the landmarks' own box is more than `recentre_tolerance` of the box size from `boxes`."""
        centred = model.box_at(landmark_centres(landmarks))
        return np.linalg.norm(centred[:, :2] - boxes[:, :2], axis=1) > self.cfg.recentre_tolerance * model.size.max()

    @staticmethod
    def _consecutive(waiting, first_index, count, stride) -> list:
        """The first `count` waiting frames up to the first gap in their source indices (lost frames)."""
        window, previous = [], first_index
        for entry in itertools.islice(waiting, count):
            if entry[1] - previous > stride:
                break
            window.append(entry)
            previous = entry[1]
        return window

    def _recheck_unconfirmed(self, current, model):
        """Redo the frames tracked since the last confirmation with a detector check each: keep those
        it confirms (with landmarks from its box), drop the rest of the track from the first it does not."""
        for index in range(current.confirmed, len(current.positions)):
            self.stats.verifications += 1
            frame = current.pending[current.positions[index]]
            box = self.landmarker.detect_near(frame, model.box(current.landmarks[index]))
            if box is None:
                break
            current.landmarks[index] = self.landmarker.landmarks(frame, box[None])[0]
            current.confirmed = index + 1
        current.drop_unconfirmed()

    def _track_by_detection(self, frames, stride: int) -> list:
        """Without tracking: detect on every frame, link boxes that overlap the previous frame's box,
        and run the landmark regressor on the chosen boxes in batches (batched where the backend can)."""
        positions, boxes, track_ids, landmarks, batch = [], [], [], [], []
        previous, track_id, previous_index = None, -1, None
        for position, index, frame in frames:
            if previous_index is not None and index - previous_index > stride:
                previous = None
            previous_index = index
            self.stats.detections += 1
            found = self.landmarker.detect(frame)
            if len(found):
                self.stats.faces_seen += 1
            chosen, continues = (found[0], False) if len(found) else (None, False)
            if len(found) and previous is not None:
                overlaps = [box_iou(box, previous) for box in found]
                if max(overlaps) > 0.3:
                    chosen, continues = found[int(np.argmax(overlaps))], True
            if chosen is not None and face_size(chosen) < self.cfg.min_face_size:
                self.stats.faces_too_small += 1
                chosen = None
            if chosen is None:
                previous = None
                continue
            track_id += 0 if continues else 1
            if not continues:
                self.start_frames[position] = frame.copy()
            positions.append(position)
            boxes.append(chosen)
            track_ids.append(track_id)
            batch.append(frame)
            previous = chosen
            if len(batch) == self.detection_batch:
                landmarks.append(self.landmarker.landmarks_many(batch, np.asarray(boxes[-len(batch) :])))
                batch = []
        if batch:
            landmarks.append(self.landmarker.landmarks_many(batch, np.asarray(boxes[-len(batch) :])))
        landmarks = np.concatenate(landmarks) if landmarks else np.zeros((0, 68, 2), np.float32)
        positions, track_ids = np.asarray(positions, int), np.asarray(track_ids)
        return [(positions[track_ids == i], landmarks[track_ids == i]) for i in range(track_id + 1)]

    @staticmethod
    def _close(tracks, current):
        if current is not None and current.positions:
            tracks.append((np.asarray(current.positions), np.stack(current.landmarks).astype(np.float32)))
        return None


def split_segments(tracks, cfg: PreprocessConfig, stats: TrackStats):
    """Tracks long enough to keep, cut into near-equal pieces of at most max_segment_frames.
    Raises Reject when none is usable (no face / too small / too short)."""
    segments = []
    for positions, landmarks in tracks:
        if len(positions) < cfg.min_segment_frames:
            continue
        pieces = -(-len(positions) // cfg.max_segment_frames)
        for part in np.array_split(np.arange(len(positions)), pieces):
            segments.append((positions[part], landmarks[part]))
    if segments:
        return segments
    if stats.faces_seen == 0:
        raise Reject("landmarks", "no_face", "no face detected in any frame")
    if stats.faces_too_small == stats.faces_seen:
        raise Reject("landmarks", "too_small", f"every face is smaller than {cfg.min_face_size} px")
    longest = max((len(positions) for positions, _ in tracks), default=0)
    raise Reject("landmarks", "too_short", f"longest face track {longest} < {cfg.min_segment_frames} frames")
