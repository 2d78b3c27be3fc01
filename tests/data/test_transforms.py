"""Frame geometry equals the references' torchvision transforms (Resize(int), CenterCrop)."""

import pytest
import torch
from torchvision.transforms import CenterCrop, Resize

from suite.data.transforms import crop_start, preprocess, resized_shape


@pytest.mark.parametrize(("height", "width"), [(240, 320), (320, 240), (360, 640), (224, 224),
                                               (225, 301), (480, 854), (64, 64), (99, 1000)])
@pytest.mark.parametrize("size", [224, 48])
def test_resize_and_crop_geometry_equals_torchvision(height, width, size):
    image = torch.zeros(1, height, width)
    resized = Resize(size, antialias=True)(image)
    assert resized_shape(height, width, size) == tuple(resized.shape[-2:])
    # Mark each row and column by its index: the crop's first row/column is where it starts.
    rows, cols = resized.shape[-2:]
    marked = torch.arange(rows).view(1, rows, 1).expand(1, rows, cols).float()
    assert crop_start(rows, size) == int(CenterCrop(size)(marked)[0, 0, 0])
    marked = torch.arange(cols).view(1, 1, cols).expand(1, rows, cols).float()
    assert crop_start(cols, size) == int(CenterCrop(size)(marked)[0, 0, 0])


def test_preprocess_crops_where_torchvision_crops():
    """A 240 x 320 frame whose columns carry their index: after the resize to 224 x 298 the
    crop starts at column 37 (the suite rounded 298.67 to 299 before and started at 37 of 299)."""
    frame = torch.zeros(1, 240, 320, 3, dtype=torch.uint8)
    frame[..., 0] = (torch.arange(320) * 255 // 319).to(torch.uint8)
    out = preprocess(frame, 224, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert out.shape == (1, 3, 224, 224)
    expected = Resize(224, antialias=True)(frame.permute(0, 3, 1, 2).float() / 255)
    expected = CenterCrop(224)(expected.clamp(0, 1))
    torch.testing.assert_close(out, expected, atol=2e-2, rtol=0)
