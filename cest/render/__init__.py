"""The parameter-free differentiable renderer (Sec. 3.1): weak-perspective camera, mesh geometry (normals),
spherical-harmonics lighting, triangle rasterization, UV sampling and unwrapping, and the Renderer that
composes them (renderer.py). Shapes are given in each module's docstring."""
