"""Batched augmentations: shapes, ranges, determinism under a seeded generator, and the geometry of crop and flip."""
import math

import pytest
import torch

from simvae_fast import augment

IMAGES = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def generator(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("recipe", list(augment.RECIPES))
@pytest.mark.parametrize("views", [1, 3])
def test_shapes_range_and_determinism(recipe, views):
    a = augment.make_views(IMAGES, views, recipe, generator(7))
    assert a.shape == (5, views, 1, 28, 28) and a.dtype == torch.float32
    assert a.min() >= 0.0 and a.max() <= 1.0
    assert torch.equal(a, augment.make_views(IMAGES, views, recipe, generator(7)))
    assert not torch.equal(a, augment.make_views(IMAGES, views, recipe, generator(8)))
    if views > 1:  # views of one image are drawn independently
        assert not torch.equal(a[:, 0], a[:, 1])


def test_identity_recipe_returns_the_images():
    identity = augment.Recipe(scale=(1.0, 1.0), ratio=(1.0, 1.0), vertical_flip=0.0, horizontal_flip=0.0)
    out = augment.make_views(IMAGES, 2, identity, generator(0))
    expected = IMAGES.float() / 255.0
    torch.testing.assert_close(out[:, 0], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, 1], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("axis", ["vertical", "horizontal"])
def test_flips_mirror_the_right_axis(axis):
    flip = augment.Recipe(scale=(1.0, 1.0), ratio=(1.0, 1.0), vertical_flip=float(axis == "vertical"),
                          horizontal_flip=float(axis == "horizontal"))
    out = augment.make_views(IMAGES, 1, flip, generator(0))[:, 0]
    dim = -2 if axis == "vertical" else -1
    torch.testing.assert_close(out, (IMAGES.float() / 255.0).flip(dim), atol=1e-5, rtol=0)


def test_fixed_crop_samples_the_box():
    """A crop of half the width and height at the top-left corner, upsampled 2x, against pixels read directly:
    output pixel (i, j) of a 2x bilinear upsampling lies at input position (i - 0.5) / 2 (pixel centres)."""
    image = torch.arange(28 * 28, dtype=torch.float32).view(1, 1, 28, 28) / (28 * 28)
    crop = augment.Recipe(scale=(0.25, 0.25), ratio=(1.0, 1.0), vertical_flip=0.0, horizontal_flip=0.0)
    g = generator(0)
    state = g.get_state()
    _, _, cx, cy = augment.crop_boxes(1, crop.scale, crop.ratio, g, "cpu")
    g.set_state(state)
    out = augment.apply_crop_flip(image, augment.draw_crop_flip(1, crop, g, "cpu"))[0, 0]
    # the box is [c - 0.5, c + 0.5] in [-1, 1] coordinates: its left edge in pixels is (c - 0.5 + 1) * 14
    left, top = (float(cx) + 0.5) * 14, (float(cy) + 0.5) * 14
    for i, j in [(5, 9), (13, 2), (20, 20)]:
        y, x = top + (i + 0.5) / 2 - 0.5, left + (j + 0.5) / 2 - 0.5
        y0, x0 = math.floor(y), math.floor(x)
        wy, wx = y - y0, x - x0
        p = image[0, 0]
        expected = ((1 - wy) * ((1 - wx) * p[y0, x0] + wx * p[y0, x0 + 1])
                    + wy * ((1 - wx) * p[y0 + 1, x0] + wx * p[y0 + 1, x0 + 1]))
        assert abs(float(out[i, j]) - float(expected)) < 1e-5


def test_crop_boxes_follow_the_recipe():
    recipe = augment.RECIPES["official"]
    w, h, cx, cy = augment.crop_boxes(4000, recipe.scale, recipe.ratio, generator(1), "cpu")
    area, ratio = w * h, w / h
    assert (area >= 0.4 - 1e-6).all() and (area <= 1 + 1e-6).all()
    assert (ratio >= 0.75 - 1e-5).all() and (ratio <= 1.3 + 1e-5).all()
    assert ((cx.abs() + w) <= 1 + 1e-6).all() and ((cy.abs() + h) <= 1 + 1e-6).all()  # inside the image
    assert area.min() < 0.45 and area.max() > 0.95  # the whole range is drawn


def test_vertical_flip_probability_is_about_half_and_as_drawn():
    recipe = augment.RECIPES["official"]
    images = (torch.arange(28.0) / 27).view(1, 1, 28, 1).expand(2000, 1, 28, 28)  # brighter downwards
    params = augment.draw_crop_flip(len(images), recipe, generator(2), "cpu")
    out = augment.apply_crop_flip(images, params)
    flipped = out[:, 0, -1].mean(dim=1) < out[:, 0, 0].mean(dim=1)  # brighter upwards
    assert torch.equal(flipped, params.fy < 0) and (params.fx == 1).all()
    assert 0.45 < float(flipped.float().mean()) < 0.55


def test_bad_arguments():
    with pytest.raises(ValueError, match="'official', 'official-rgb', 'simclr'"):
        augment.make_views(IMAGES, 2, "autoaugment", generator(0))
    with pytest.raises(ValueError, match="views"):
        augment.make_views(IMAGES, 0, "official", generator(0))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        augment.make_views(IMAGES[0], 2, "official", generator(0))


@pytest.mark.gpu
def test_cuda_generator_gives_the_same_views_twice():
    images = IMAGES.cuda()
    a = augment.make_views(images, 2, "simclr", torch.Generator("cuda").manual_seed(3))
    b = augment.make_views(images, 2, "simclr", torch.Generator("cuda").manual_seed(3))
    assert a.device.type == "cuda" and torch.equal(a, b)


# --- colour: the RGB recipes' jitter and greyscale ---

RGB = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("recipe", list(augment.RECIPES))
def test_rgb_views_are_reproducible_from_the_seed(recipe):
    a = augment.make_views(RGB, 2, recipe, generator(5))
    assert a.shape == (6, 2, 3, 8, 8) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, augment.make_views(RGB, 2, recipe, generator(5)))
    assert not torch.equal(a, augment.make_views(RGB, 2, recipe, generator(6)))


def _reference_jitter(image, b, c, s, h, order):
    """torchvision's ColorJitter on one image [3, H, W] in float64, written out: brightness x·b, contrast and
    saturation as blends with the greyscale mean / image (weights 0.299, 0.587, 0.114), hue as a rotation of
    colorsys's HSV hue by h turns; clamped to [0, 1] after each."""
    import colorsys

    def grey(x):
        return 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]

    def hue(x):
        out = x.clone()
        for i in range(x.shape[1]):
            for j in range(x.shape[2]):
                hh, ss, vv = colorsys.rgb_to_hsv(*x[:, i, j].tolist())
                out[:, i, j] = torch.tensor(colorsys.hsv_to_rgb((hh + h) % 1.0, ss, vv), dtype=x.dtype)
        return out

    steps = [lambda x: x * b, lambda x: c * x + (1 - c) * grey(x).mean(), lambda x: s * x + (1 - s) * grey(x), hue]
    for op in order:
        image = steps[op](image).clamp(0, 1)
    return image


def test_jitter_applies_each_images_own_order():
    """Four images, four different orders and factors: each matches the per-image sequential reference. Fails if
    the order is shared by the batch, or a factor goes to the wrong image or the wrong operation."""
    x = augment.to_float(RGB[:4]).double()
    orders = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]])
    factors = [torch.tensor(v, dtype=torch.float64) for v in
               ([1.3, 0.6, 1.0, 1.7], [0.5, 1.4, 1.2, 0.9], [1.6, 0.3, 0.8, 1.1], [0.1, -0.2, 0.05, 0.15])]
    params = augment.Jitter(torch.ones(4, dtype=torch.bool), *factors, orders, torch.zeros(4, dtype=torch.bool))
    out = augment.apply_jitter(x, params)
    for i in range(4):
        expected = _reference_jitter(x[i], *(f[i].item() for f in factors), orders[i].tolist())
        torch.testing.assert_close(out[i], expected, atol=2e-6, rtol=0)


def test_jitter_draws_follow_the_recipe():
    recipe = augment.RECIPES["simclr"]
    p = augment.draw_jitter(4000, recipe, generator(3), "cpu")
    assert 0.77 < p.applied.float().mean() < 0.83 and 0.17 < p.grey.float().mean() < 0.23
    for factor in (p.brightness, p.contrast, p.saturation):
        drawn = factor[p.applied]
        assert drawn.min() >= 0.6 and drawn.max() <= 1.4 and drawn.min() < 0.62 and drawn.max() > 1.38
        assert (factor[~p.applied] == 1).all()
    assert p.hue[p.applied].abs().max() <= 0.1 and (p.hue[~p.applied] == 0).all()
    assert (p.order.sort(dim=1).values == torch.arange(4)).all()  # a permutation per image
    x = augment.to_float(RGB[:1]).expand(4000, 3, 8, 8)
    out = augment.apply_jitter(x, p)
    assert torch.equal(out[~p.applied & ~p.grey], x[~p.applied & ~p.grey])  # untouched where nothing was drawn
    grey = out[p.grey]
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])


def test_official_rgb_is_the_official_recipe_for_colour_images():
    assert augment.get_recipe("official", channels=3) == augment.RECIPES["official-rgb"]
    assert augment.get_recipe("official", channels=1) == augment.RECIPES["official"]
    r = augment.RECIPES["official-rgb"]
    assert (r.jitter, r.brightness, r.contrast, r.saturation, r.hue, r.scale, r.vertical_flip, r.jitter_first) == \
        (1.0, 0.8, 0.8, 0.8, 0.2, (0.6, 1.0), 0.5, True)
