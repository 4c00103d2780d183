"""Style evaluation: how much of what the augmentation changed can be read from a representation.

The paper's second claim (docs/math.md §5) is that SimVAE keeps style, the information the augmentations change,
which discriminative methods learn to discard. Each image of the validation and test splits, and of the first
STYLE_TRAIN_IMAGES of the training split, is augmented once by the official recipe for its images
(augment.get_recipe("official", C): for grey images random resized crop, scale 0.4-1, and a vertical flip with
p = 0.5; for RGB images colour jitter first, crop scale 0.6-1) from a generator seeded with the evaluation seed,
and the probes of simvae_fast.app.probes (linear and MLP, the content probes' protocol: validation-chosen epoch,
test score at that epoch) predict from its representation:
  flip      whether it was flipped vertically: classification, accuracy (chance 0.5);
  scale     the crop's area as a fraction of the image's, w·h: regression, R²;
  position  the crop's centre (cx, cy) in [-1, 1]²: regression, R² pooled over the two coordinates;
  colour    (RGB only) the jitter's brightness, contrast and saturation factors and hue shift: R² pooled.
Regression targets are standardised with the training split's mean and std, so the mean squared error weighs
the coordinates alike (R² is unchanged by it). R² ≤ 0 means no better than predicting the mean.
"""
import torch

from simvae_fast.app import augment
from simvae_fast.app.probes import PROBE_EPOCHS, classification, regression, train_probes

STYLE_TRAIN_IMAGES = 10000  # the style probes' training split: enough for a few numbers, 1/5 of the content's cost
STYLE_RECIPE = "official"
TARGETS = ("flip", "scale", "position")
RGB_TARGETS = (*TARGETS, "colour")


@torch.no_grad()
def augmented_split(model, images, generator, device, batch=1024):
    """One augmentation of each image [N, C, H, W]: the representations [N, D] and the style targets
    {"flip": [N] int64, "scale": [N, 1], "position": [N, 2](, "colour": [N, 4])}."""
    model.eval()
    recipe = augment.get_recipe(STYLE_RECIPE, images.shape[1])
    features, targets = [], []
    for start in range(0, len(images), batch):
        x = augment.to_float(images[start:start + batch].to(device))
        p = augment.draw_crop_flip(len(x), recipe, generator, device)
        drawn = {"flip": (p.fy < 0).long(), "scale": (p.w * p.h)[:, None], "position": torch.stack([p.cx, p.cy], 1)}
        if recipe.jitter > 0:
            c = augment.draw_jitter(len(x), recipe, generator, device)
            x = augment.apply_jitter(x, c)
            drawn["colour"] = torch.stack([c.brightness, c.contrast, c.saturation, c.hue], 1)
        features.append(model.represent(augment.apply_crop_flip(x, p)).float())
        targets.append(drawn)
    return torch.cat(features), {name: torch.cat([t[name] for t in targets]) for name in targets[0]}


def evaluate_style(model, dataset, device, probe_epochs=PROBE_EPOCHS, seed=0, train_images=STYLE_TRAIN_IMAGES):
    """{target: {probe kind: result}} (probes.train_probes) for the style targets of `dataset` (data.Dataset)."""
    generator = torch.Generator(device).manual_seed(seed)
    splits = {name: augmented_split(model, images, generator, device) for name, images in
              (("train", dataset.train.images[:train_images]), ("val", dataset.val.images),
               ("test", dataset.test.images))}
    train_targets = splits["train"][1]
    tasks, standardise = {}, {}
    for name, values in train_targets.items():
        if name == "flip":
            tasks[name] = classification(2)
        else:
            tasks[name] = regression(values.shape[1])
            standardise[name] = values.mean(dim=0), values.std(dim=0).clamp_min(1e-8)
    columns = {split: (features, {name: (values - standardise[name][0]) / standardise[name][1]
                                  if name in standardise else values for name, values in targets.items()})
               for split, (features, targets) in splits.items()}
    return train_probes(tasks, columns["train"], columns["val"], columns["test"], probe_epochs, seed)
