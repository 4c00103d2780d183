"""Augmentations on batched image tensors, on the training device: J independent views per image.

Recipes (RECIPES; "official" means the official code's recipe for the images' channel count, get_recipe):
- "official" (grey images): random resized crop to the image size (scale 0.4-1 of the area, aspect ratio
  0.75-1.3), then a random vertical flip (p = 0.5).
- "official-rgb" (the official code's CIFAR-10 and CelebA recipe): colour jitter, always applied, with
  brightness, contrast and saturation 0.8 and hue 0.2, then random resized crop (scale 0.6-1, ratio 0.75-1.3)
  and vertical flip (p = 0.5).
- "simclr": SimCLR's recipe: random resized crop (scale 0.08-1, ratio 3/4-4/3), horizontal flip (p = 0.5), with
  p = 0.8 colour jitter (0.4, 0.4, 0.4, 0.1), then greyscale with p = 0.2 (saturation, hue and greyscale leave
  grey images as they are, as torchvision's do; blur is not used at these sizes).

Crop and flip are one affine resampling per view (bilinear, F.grid_sample). The crop box is drawn as torchvision's
RandomResizedCrop draws it (10 tries of area and log-ratio, falling back to the whole image), in continuous
coordinates rather than whole pixels. Colour jitter is torchvision's ColorJitter per image: factors brightness,
contrast and saturation uniform in [max(0, 1 - s), 1 + s], a hue shift uniform in [-h, h] turns, applied in a
random order drawn per image; the four operations are kornia.enhance's batched ones (multiplicative brightness,
contrast about the greyscale mean, saturation against the greyscale image, hue rotation), each with per-image
factors. All randomness comes from the generator passed in (on the images' device), so a seeded generator gives
the same views; nothing synchronises with the host.
"""
import functools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F


class Recipe(NamedTuple):
    scale: tuple  # range of the crop's area, as a fraction of the image's
    ratio: tuple  # range of the crop's aspect ratio width / height
    vertical_flip: float  # probability
    horizontal_flip: float  # probability
    jitter: float = 0.0  # probability of the colour jitter
    brightness: float = 0.0  # jitter strengths, as torchvision's ColorJitter(brightness, contrast, saturation, hue)
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    greyscale: float = 0.0  # probability, after the jitter
    jitter_first: bool = False  # jitter before the crop (the official RGB recipe) or after it (SimCLR)


RECIPES = {
    "official": Recipe(scale=(0.4, 1.0), ratio=(0.75, 1.3), vertical_flip=0.5, horizontal_flip=0.0),
    "official-rgb": Recipe(scale=(0.6, 1.0), ratio=(0.75, 1.3), vertical_flip=0.5, horizontal_flip=0.0, jitter=1.0,
                           brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2, jitter_first=True),
    "simclr": Recipe(scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), vertical_flip=0.0, horizontal_flip=0.5, jitter=0.8,
                     brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, greyscale=0.2),
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


class Jitter(NamedTuple):
    """What apply_jitter does to each image: whether it is jittered, the factors (neutral where it is not),
    the order of the four operations (a permutation of 0..3: brightness, contrast, saturation, hue) and whether it
    is then made grey."""
    applied: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor  # in turns, [-0.5, 0.5]
    order: torch.Tensor  # [n, 4]
    grey: torch.Tensor


def draw_jitter(n, recipe, generator, device):
    """The colour jitter and greyscale of n images, drawn from the generator."""
    applied = torch.rand(n, generator=generator, device=device) < recipe.jitter

    def factor(low, high, neutral):
        return torch.where(applied, _uniform(low, high, (n,), generator, device), neutral)

    return Jitter(
        applied,
        *(factor(max(0.0, 1.0 - s), 1.0 + s, 1.0) for s in (recipe.brightness, recipe.contrast, recipe.saturation)),
        factor(-recipe.hue, recipe.hue, 0.0),
        torch.rand(n, 4, generator=generator, device=device).argsort(dim=1),
        torch.rand(n, generator=generator, device=device) < recipe.greyscale,
    )


@functools.cache
def kornia():
    """kornia, imported when a colour operation first runs (the grey recipes do without it)."""
    try:
        import kornia
    except ImportError as err:
        raise ImportError("the colour jitter and greyscale augmentations need kornia: pip install kornia") from err
    return kornia


def operations():
    """The jitter's four operations, in the order of Jitter.order's indices."""
    enhance = kornia().enhance
    return (enhance.adjust_brightness_accumulative, enhance.adjust_contrast_with_mean_subtraction,
            enhance.adjust_saturation_with_gray_subtraction,
            lambda x, turns: enhance.adjust_hue(x, turns * (2 * math.pi)))


def apply_jitter(x, params):
    """Colour jitter then greyscale, x [N, C, H, W] float in [0, 1] -> [N, C, H, W], per `params` (Jitter).

    Position k of image i's order applies operation order[i, k]; on the batch that is, for each k and each
    operation, the operation on every image kept where it is image i's k-th (4 x 4 batched calls, no indexing,
    so no host synchronisation). Saturation, hue and greyscale do nothing to one-channel images."""
    factors = (params.brightness, params.contrast, params.saturation, params.hue)
    ops = operations()[:4 if x.shape[1] == 3 else 2]
    out = x
    for k in range(4):
        for index, op in enumerate(ops):
            here = (params.order[:, k] == index).view(-1, 1, 1, 1)
            out = torch.where(here, op(out, factors[index]), out)
    out = torch.where(params.applied.view(-1, 1, 1, 1), out, x)  # exactly the image where nothing was drawn
    if x.shape[1] == 3:
        grey = kornia().color.rgb_to_grayscale(out).expand_as(out)
        out = torch.where(params.grey.view(-1, 1, 1, 1), grey, out)
    return out


def to_float(images):
    """uint8 images in 0..255 -> float32 in [0, 1]; float images are returned as they are."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images


def get_recipe(recipe, channels=1):
    """A Recipe, or the Recipe of a name in RECIPES; "official" is "official-rgb" for three-channel images."""
    if isinstance(recipe, str):
        if recipe not in RECIPES:
            raise ValueError(f"augment: expected one of {', '.join(map(repr, RECIPES))}, got {recipe!r}")
        recipe = RECIPES["official-rgb" if recipe == "official" and channels == 3 else recipe]
    return recipe


def make_views(images, views, recipe, generator):
    """J = `views` independent augmentations of each image: [B, C, H, W] (uint8 or float in [0, 1])
    -> [B, J, C, H, W] float32 in [0, 1]. `recipe`: a name of RECIPES or a Recipe."""
    if images.dim() != 4:
        raise ValueError(f"images: expected [B, C, H, W], got shape {tuple(images.shape)}")
    if views < 1:
        raise ValueError(f"views: expected at least 1, got {views}")
    recipe = get_recipe(recipe, images.shape[1])
    b = images.shape[0]
    x = to_float(images).repeat_interleave(views, dim=0)  # view j of image i is row i * J + j
    crop_flip = draw_crop_flip(x.shape[0], recipe, generator, x.device)
    if recipe.jitter == 0 and recipe.greyscale == 0:
        return apply_crop_flip(x, crop_flip).view(b, views, *images.shape[1:])
    colour = draw_jitter(x.shape[0], recipe, generator, x.device)
    if recipe.jitter_first:
        x = apply_crop_flip(apply_jitter(x, colour), crop_flip)
    else:
        x = apply_jitter(apply_crop_flip(x, crop_flip), colour)
    return x.view(b, views, *images.shape[1:])
