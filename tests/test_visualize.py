import torch

from cest.config import ModelConfig
from cest.model import CESTModel
from cest.visualize import EVALUATION_PANELS, TRAINING_PANELS, face_panels, panel_grid

from small_model import SMALL


def test_panels_show_the_face_over_the_image_and_the_light_alone(morphable):
    torch.manual_seed(0)
    model = CESTModel(ModelConfig(**SMALL), morphable).eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        estimate = model(images)
    panels = face_panels(model, images, estimate, TRAINING_PANELS + EVALUATION_PANELS[4:])
    face = estimate.faces.face_mask.bool().expand(-1, 3, -1, -1)
    assert face.any() and (~face).any()
    # Off the face the overlay is the image, on it the rendering.
    assert torch.equal(panels["overlay"][~face], images[~face])
    assert torch.allclose(panels["overlay"][face], model.render(estimate).clamp(0, 1)[face])
    # At initialisation the light is ambient (shading 1): the shading panel is white on the face, black off it.
    assert torch.allclose(panels["shading"][face], torch.ones(()), atol=0.05)
    assert panels["shading"][~face].abs().max() == 0
    grid = panel_grid(panels, TRAINING_PANELS)
    assert grid.shape == (2 * 64, len(TRAINING_PANELS) * 64, 3) and grid.dtype.name == "uint8"
    # Row 1, column 0 is the second input image.
    expected = (images[1].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    assert (grid[64:, :64] == expected).all()
