"""Benchmark files: triangle meshes in and out (OBJ), and the one-line error for a missing or malformed dataset.

`read_mesh` reads a scan or a prediction with trimesh (OBJ, PLY, ...; process=False, so nothing is merged or
reordered); `write_obj` writes a mesh in a fixed topology (vertex order and triangles exactly as given, 1-based
faces, no normals or texture), the form NoW and REALY read. Shapes: vertices (N, 3) float64, triangles (F, 3) int64.
"""

from pathlib import Path

import numpy as np


class DatasetError(ValueError):
    """A benchmark folder that is missing or lacks a file the protocol needs; the message names it, on one line."""


def require_dir(path: Path | None, benchmark: str) -> Path:
    path = Path(path) if path is not None else None
    if path is None or not path.is_dir():
        raise DatasetError(f"{benchmark}: {path} is not a folder")
    return path


def _load(path: Path):
    """(the trimesh mesh, vertices (N, 3) float64, triangles (F, 3) int64)."""
    import trimesh

    try:
        mesh = trimesh.load(str(path), process=False, force="mesh")
    except Exception as error:  # trimesh raises many kinds for a bad file; all mean the same to a user
        raise DatasetError(f"cannot read {path} as a mesh ({type(error).__name__}: {str(error)[:120]})") from None
    vertices, triangles = np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64)
    if len(vertices) == 0 or len(triangles) == 0:
        raise DatasetError(f"{path}: no triangles")
    return mesh, vertices, triangles


def read_mesh(path: Path) -> tuple[np.ndarray, np.ndarray]:
    return _load(path)[1:]


def read_coloured_mesh(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(vertices, triangles, colours (N, 3) in [0, 1] or None): vertex colours, or the texture sampled at each
    vertex's texture coordinate (3dMD scans such as MICC's are textured), or None when the file has neither."""
    import trimesh

    mesh, vertices, triangles = _load(path)
    visual = mesh.visual
    if isinstance(visual, trimesh.visual.TextureVisuals):
        if visual.uv is None or getattr(visual.material, "image", None) is None:
            return vertices, triangles, None
        visual = visual.to_color()
    if visual.kind != "vertex":
        return vertices, triangles, None
    return vertices, triangles, np.asarray(visual.vertex_colors, np.float64)[:, :3] / 255


def write_obj(path: Path, vertices: np.ndarray, triangles: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in np.asarray(vertices, np.float64)]
    lines += [f"f {a} {b} {c}" for a, b, c in np.asarray(triangles, np.int64) + 1]
    path.write_text("\n".join(lines) + "\n")
    return path
