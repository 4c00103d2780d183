"""Augmentations on batched image tensors, on the training device: J independent views per image.

Recipes (RECIPES):
- "official": the SimVAE code's recipe for grey images: random resized crop to the image size (scale 0.4-1 of the
  area, aspect ratio 0.75-1.3), then a random vertical flip (p = 0.5).
- "simclr": SimCLR's recipe as far as it applies to grey images: random resized crop (scale 0.08-1, ratio 3/4-4/3),
  random horizontal flip (p = 0.5), and with p = 0.8 a brightness and a contrast jitter of strength 0.4 (colour
  jitter's saturation and hue, and random greyscale, do nothing to grey images; blur is not used at 28 px).

Crop and flip are one affine resampling per view (bilinear, F.grid_sample). The crop box is drawn as torchvision's
RandomResizedCrop draws it (10 tries of area and log-ratio, falling back to the whole image), in continuous
coordinates rather than whole pixels. All randomness comes from the generator passed in (on the images' device),
so a seeded generator gives the same views.
"""
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F


class Recipe(NamedTuple):
    scale: tuple  # range of the crop's area, as a fraction of the image's
    ratio: tuple  # range of the crop's aspect ratio width / height
    vertical_flip: float  # probability
    horizontal_flip: float  # probability
    jitter: float  # probability of the brightness + contrast jitter
    jitter_strength: float  # factors drawn from [1 - s, 1 + s]


RECIPES = {
    "official": Recipe(scale=(0.4, 1.0), ratio=(0.75, 1.3), vertical_flip=0.5, horizontal_flip=0.0, jitter=0.0,
                       jitter_strength=0.0),
    "simclr": Recipe(scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), vertical_flip=0.0, horizontal_flip=0.5, jitter=0.8,
                     jitter_strength=0.4),
}
CROP_TRIES = 10


def _uniform(low, high, shape, generator, device):
    return low + (high - low) * torch.rand(shape, generator=generator, device=device)


def crop_boxes(n, scale, ratio, generator, device):
    """Half-widths, half-heights (fractions of the image, in (0, 1]) and centres (in [-1, 1]) of n crops.

    Like torchvision's RandomResizedCrop on a square image: up to CROP_TRIES draws of area fraction s and
    log aspect ratio; the first draw that fits (w = sqrt(s r) <= 1, h = sqrt(s / r) <= 1) is taken, else the
    whole image. The centre is uniform over the positions where the crop lies inside the image.
    """
    area = _uniform(scale[0], scale[1], (n, CROP_TRIES), generator, device)
    log_ratio = _uniform(math.log(ratio[0]), math.log(ratio[1]), (n, CROP_TRIES), generator, device)
    w, h = torch.sqrt(area * log_ratio.exp()), torch.sqrt(area / log_ratio.exp())
    fits = (w <= 1.0) & (h <= 1.0)
    first = fits.int().argmax(dim=1, keepdim=True)  # index of the first try that fits (0 if none does)
    any_fits = fits.any(dim=1)
    w = torch.where(any_fits, w.gather(1, first).squeeze(1), 1.0)
    h = torch.where(any_fits, h.gather(1, first).squeeze(1), 1.0)
    cx = (1.0 - w) * _uniform(-1.0, 1.0, (n,), generator, device)
    cy = (1.0 - h) * _uniform(-1.0, 1.0, (n,), generator, device)
    return w, h, cx, cy


def _flip_signs(n, p, generator, device):
    """-1 with probability p, else +1."""
    return torch.where(torch.rand(n, generator=generator, device=device) < p, -1.0, 1.0)


class CropFlip(NamedTuple):
    """What apply_crop_flip does to each image: crop half-width w and half-height h (fractions of the image, in
    (0, 1]), crop centre (cx, cy) in [-1, 1], and flip signs fx, fy (-1: mirrored)."""
    w: torch.Tensor
    h: torch.Tensor
    cx: torch.Tensor
    cy: torch.Tensor
    fx: torch.Tensor
    fy: torch.Tensor


def draw_crop_flip(n, recipe, generator, device):
    """The crop boxes and flips of n images, drawn from the generator."""
    w, h, cx, cy = crop_boxes(n, recipe.scale, recipe.ratio, generator, device)
    fx = _flip_signs(n, recipe.horizontal_flip, generator, device)
    fy = _flip_signs(n, recipe.vertical_flip, generator, device)
    return CropFlip(w, h, cx, cy, fx, fy)


def apply_crop_flip(x, params):
    """Random resized crop then flips, x [N, C, H, W] float -> [N, C, H, W], per `params` (CropFlip).

    In F.affine_grid's normalised coordinates (-1..1 across the image) output position p samples the input at
    (cx + w * fx * p_x, cy + h * fy * p_y): a box of half-size (w, h) centred on (cx, cy), mirrored where fx or
    fy = -1. Resampling to the full size is bilinear (align_corners=False: pixel centres map onto pixel centres).
    """
    w, h, cx, cy, fx, fy = params
    zero = torch.zeros_like(w)
    theta = torch.stack([torch.stack([w * fx, zero, cx], 1), torch.stack([zero, h * fy, cy], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def jitter(x, probability, strength, generator):
    """Brightness (x * b) then contrast ((x - mean) * c + mean, mean over the image), b and c uniform in
    [1 - strength, 1 + strength], applied to each image with `probability`; clamped to [0, 1]."""
    n, device = x.shape[0], x.device
    apply = torch.rand(n, generator=generator, device=device) < probability
    b = torch.where(apply, _uniform(1 - strength, 1 + strength, (n,), generator, device), 1.0).view(n, 1, 1, 1)
    c = torch.where(apply, _uniform(1 - strength, 1 + strength, (n,), generator, device), 1.0).view(n, 1, 1, 1)
    x = x * b
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * c + mean).clamp(0.0, 1.0)


def to_float(images):
    """uint8 images in 0..255 -> float32 in [0, 1]; float images are returned as they are."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images


def get_recipe(recipe):
    """A Recipe, or the Recipe of a name in RECIPES."""
    if isinstance(recipe, str):
        if recipe not in RECIPES:
            raise ValueError(f"augment: expected one of {', '.join(map(repr, RECIPES))}, got {recipe!r}")
        recipe = RECIPES[recipe]
    return recipe


def make_views(images, views, recipe, generator):
    """J = `views` independent augmentations of each image: [B, C, H, W] (uint8 or float in [0, 1])
    -> [B, J, C, H, W] float32 in [0, 1]. `recipe`: a name of RECIPES or a Recipe."""
    recipe = get_recipe(recipe)
    if images.dim() != 4:
        raise ValueError(f"images: expected [B, C, H, W], got shape {tuple(images.shape)}")
    if views < 1:
        raise ValueError(f"views: expected at least 1, got {views}")
    b = images.shape[0]
    x = to_float(images).repeat_interleave(views, dim=0)  # view j of image i is row i * J + j
    x = apply_crop_flip(x, draw_crop_flip(x.shape[0], recipe, generator, x.device))
    if recipe.jitter > 0:
        x = jitter(x, recipe.jitter, recipe.jitter_strength, generator)
    return x.view(b, views, *images.shape[1:])
