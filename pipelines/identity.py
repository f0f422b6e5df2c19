"""One primary face per clip: when a clip has several face tracks (the track broke, or the camera cut
to someone else), keep the tracks of the person with the longest track and drop the others.

Identity comes from dlib's face recognition ResNet (128-d descriptors; the same person is closer than
0.6, dlib's own threshold), shipped in face-recognition-models. One descriptor per track, computed on
its first frame (a detector frame) from that frame's 68 landmarks, so it works with landmarks from any
backend, and a streamed video only has to keep each track's first frame.
"""

from __future__ import annotations

import numpy as np

from pipelines.landmarks import dlib_model_path


class FaceIdentity:
    def __init__(self):
        import dlib

        self._dlib = dlib
        self._model = dlib.face_recognition_model_v1(dlib_model_path("dlib_face_recognition_resnet_model_v1.dat"))

    def descriptor(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        points = [self._dlib.point(int(x), int(y)) for x, y in landmarks - 0.5]
        left, top = (landmarks.min(axis=0) - 0.5).astype(int)
        right, bottom = (landmarks.max(axis=0) - 0.5).astype(int)
        shape = self._dlib.full_object_detection(self._dlib.rectangle(left, top, right, bottom), points)
        return np.asarray(self._model.compute_face_descriptor(np.ascontiguousarray(image), shape))


def keep_primary_face(tracks, frames, identity: FaceIdentity, threshold: float = 0.6):
    """The tracks showing the same person as the longest track, in their original order.
    frames: indexable by position (an array of all frames, or a dict holding each track's first frame)."""
    if len(tracks) < 2:
        return tracks
    descriptors = [identity.descriptor(frames[positions[0]], landmarks[0]) for positions, landmarks in tracks]
    primary = max(range(len(tracks)), key=lambda index: len(tracks[index][0]))
    return [
        track
        for track, descriptor in zip(tracks, descriptors)
        if np.linalg.norm(descriptor - descriptors[primary]) < threshold
    ]
