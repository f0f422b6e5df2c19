"""Textured mesh files from a reconstruction: OBJ + MTL + PNG and binary glTF (GLB), via trimesh.

The mesh is the estimated shape in model space (x right, y up, z toward the camera: the axes OBJ and glTF
viewers expect), with the morphable model's per-vertex UV coordinates and the estimated reflectance map as
its texture. Our UV maps have v running down the rows; OBJ and glTF texture coordinates have v up, so v is
flipped on the way out.

Shapes: vertices (N, 3), triangles (F, 3), uv (N, 2) in [0, 1] (v down), texture (S, S, 3) uint8 RGB.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass
class MeshFiles:
    obj: Path
    mtl: Path
    texture: Path
    glb: Path


def textured_mesh(vertices: np.ndarray, triangles: np.ndarray, uv: np.ndarray, texture: np.ndarray):
    """A trimesh.Trimesh carrying the UV map as its material (vertex order and count kept)."""
    import trimesh

    visual = trimesh.visual.TextureVisuals(
        uv=np.stack([uv[:, 0], 1.0 - uv[:, 1]], axis=1),  # v down (ours) -> v up (OBJ, glTF)
        # White diffuse colour: OBJ viewers multiply the texture by Kd.
        material=trimesh.visual.material.SimpleMaterial(image=Image.fromarray(texture), diffuse=(255, 255, 255, 255)),
    )
    return trimesh.Trimesh(vertices=np.asarray(vertices, np.float64), faces=np.asarray(triangles, np.int64),
                           visual=visual, process=False)


def write_textured_mesh(directory: str | Path, stem: str, vertices: np.ndarray, triangles: np.ndarray,
                        uv: np.ndarray, texture: np.ndarray) -> MeshFiles:
    """Write STEM.obj, STEM.mtl, STEM.png and STEM.glb into `directory` (created)."""
    from trimesh.exchange.obj import export_obj

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    mesh = textured_mesh(vertices, triangles, uv, texture)
    files = MeshFiles(directory / f"{stem}.obj", directory / f"{stem}.mtl", directory / f"{stem}.png",
                      directory / f"{stem}.glb")
    # export_obj returns the OBJ text plus the MTL (and the image, named after the material: we write the
    # image under our own name and point the MTL's map_Kd at it).
    obj_text, extras = export_obj(mesh, include_texture=True, return_texture=True, mtl_name=files.mtl.name)
    mtl = extras[files.mtl.name].decode().splitlines()
    files.mtl.write_text("\n".join(f"map_Kd {files.texture.name}" if line.startswith("map_Kd") else line
                                   for line in mtl) + "\n")
    Image.fromarray(texture).save(files.texture)
    files.obj.write_text(obj_text)
    files.glb.write_bytes(mesh.export(file_type="glb"))
    return files
