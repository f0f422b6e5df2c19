import pytest
import torch

from cest.render.lighting import ambient_sh, shade
from cest.morphable import load_sfm
from cest.render.renderer import Renderer

# A unit square facing the camera, its UV layout the whole map (v down while y goes up).
SQUARE = torch.tensor([[-1.0, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]])
SQUARE_UV = torch.tensor([[0.0, 1], [1, 1], [1, 0], [0, 0]])
SQUARE_FACES = torch.tensor([[0, 1, 2], [0, 2, 3]])


def test_square_renders_its_texture_pixel_for_pixel():
    """Scale 1 maps the square onto the whole 32 x 32 image: each pixel shows the texel under it."""
    renderer = Renderer(SQUARE_UV, SQUARE_FACES, image_size=32, uv_size=8)
    texture = torch.rand(1, 3, 32, 32)
    image, mask = renderer.render(SQUARE[None], torch.tensor([[1.0, 0, 0, 0, 0, 0, 0]]), texture, ambient_sh(1))
    assert mask.all()
    assert torch.allclose(image, texture, atol=1e-5)


def test_flat_face_shading_is_the_sh_value_at_its_normal():
    renderer = Renderer(SQUARE_UV, SQUARE_FACES, image_size=16, uv_size=8)
    sh = ambient_sh(1) + torch.tensor([[0.0, 0.3, 0.5, -0.2, 0.1, 0.2, -0.3, 0.05, 0.1]])
    white = torch.ones(1, 3, 4, 4)
    image, mask = renderer.render(SQUARE[None] * 0.5, torch.tensor([[1.0, 0, 0, 0, 0, 0, 0]]), white, sh)
    expected = shade(torch.tensor([[0.0, 0.0, 1.0]]), sh)[0, 0]
    inside = mask[0, 0] > 0
    assert inside.sum() == 64  # the half-size square covers the middle 8 x 8 pixels
    assert torch.allclose(image[0, :, inside], expected.expand(3, 64), atol=1e-5)
    assert (image[0, :, ~inside] == 0).all()


def test_sfm_render_mask_and_gradients():
    model = load_sfm()
    renderer = Renderer.for_model(model, image_size=96, uv_size=32)
    alpha_id = torch.zeros(2, model.n_identity, requires_grad=True)
    vertices = model.shape(alpha_id, torch.zeros(2, model.n_expression))
    viewpoint = torch.tensor([[0.7, 0.0, 0.3, 0.0, 0.0, 0.0, 0.0], [0.6, 0.1, -0.4, 0.1, 0.1, 0.0, 0.0]],
                             requires_grad=True)
    reflectance = torch.rand(2, 3, 32, 32, requires_grad=True)
    sh = (ambient_sh(2) + 0.1 * torch.randn(2, 9)).requires_grad_()
    image, mask = renderer.render(vertices, viewpoint, reflectance, sh)
    assert image.shape == (2, 3, 96, 96) and mask.shape == (2, 1, 96, 96)
    # The face covers a central blob, not the corners.
    assert mask[:, 0, 48, 48].all() and not mask[:, 0, 0, 0].any()
    assert 0.2 < mask.mean() < 0.6
    (image * torch.rand_like(image)).sum().backward()
    for tensor in (alpha_id, viewpoint, reflectance, sh):
        assert torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0


def _nvdiffrast_installed() -> bool:
    try:
        import nvdiffrast.torch  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", ["torch", "nvdiffrast"])
def test_cuda_render_matches_cpu_image_and_gradients(backend):
    """The GPU renderer (either rasterizer) gives the CPU's image and gradients: training on a GPU optimises
    the same objective as the CPU tests check."""
    if backend == "nvdiffrast" and not _nvdiffrast_installed():
        pytest.skip("nvdiffrast not installed")
    model = load_sfm()
    torch.manual_seed(0)
    inputs = dict(
        alpha_id=0.5 * torch.randn(2, model.n_identity),
        viewpoint=torch.tensor([[0.7, 0.0, 0.3, 0.0, 0.0, 0.0, 0.0], [0.6, 0.1, -0.4, 0.1, 0.1, 0.0, 0.0]]),
        reflectance=torch.rand(2, 3, 64, 64),
        sh=ambient_sh(2) + 0.1 * torch.randn(2, 9),
    )
    weights = torch.rand(2, 3, 128, 128)

    def render(device, raster_backend):
        morphable = load_sfm().to(device)
        renderer = Renderer.for_model(morphable, image_size=128, uv_size=64, raster_backend=raster_backend).to(device)
        leaves = {name: value.to(device).requires_grad_() for name, value in inputs.items()}
        vertices = morphable.shape(leaves["alpha_id"], torch.zeros(2, morphable.n_expression, device=device))
        image, mask = renderer.render(vertices, leaves["viewpoint"], leaves["reflectance"], leaves["sh"])
        (image * weights.to(device)).sum().backward()
        return image.detach().cpu(), mask.cpu(), {name: leaf.grad.cpu() for name, leaf in leaves.items()}

    cpu_image, cpu_mask, cpu_grads = render("cpu", "torch")
    gpu_image, gpu_mask, gpu_grads = render("cuda", backend)
    # Pixel centres (nearly) on an edge may fall to the neighbouring triangle: a few pixels only.
    same = (cpu_mask == gpu_mask).all(1, keepdim=True).expand_as(cpu_image)
    assert same.float().mean() > 0.999
    torch.testing.assert_close(gpu_image[same], cpu_image[same], atol=2e-3, rtol=0)
    for name in inputs:
        cosine = torch.nn.functional.cosine_similarity(gpu_grads[name].flatten(), cpu_grads[name].flatten(), dim=0)
        assert cosine > 0.99, (name, float(cosine))
