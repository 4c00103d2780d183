"""Style evaluation: how much of what the augmentation changed can be read from a representation.

The paper's second claim (math doc §5) is that SimVAE keeps style, the information the augmentations change,
which discriminative methods learn to discard. Each image of the validation and test splits, and of the first
STYLE_TRAIN_IMAGES of the training split, is augmented once by the paper's recipe for grey images
(augment.RECIPES["official"]: random resized crop, scale 0.4-1 of the area, and a vertical flip with p = 0.5)
from a generator seeded with the evaluation seed, and the probes of simvae_fast.probes (linear and MLP, the
content probes' protocol: validation-chosen epoch, test score at that epoch) predict from its representation:
  flip      whether it was flipped vertically: classification, accuracy (chance 0.5);
  scale     the crop's area as a fraction of the image's, w·h: regression, R²;
  position  the crop's centre (cx, cy) in [-1, 1]²: regression, R² pooled over the two coordinates.
Regression targets are standardised with the training split's mean and std, so the mean squared error weighs
the coordinates alike (R² is unchanged by it). R² ≤ 0 means no better than predicting the mean.
"""
import torch

from simvae_fast import augment
from simvae_fast.probes import PROBES, classification, regression, train_probe

STYLE_TRAIN_IMAGES = 10000  # the style probes' training split: enough for 2-3 numbers, 1/5 of the content probes' cost
STYLE_RECIPE = "official"
TARGETS = ("flip", "scale", "position")


@torch.no_grad()
def augmented_split(model, images, generator, device, batch=1024):
    """One augmentation of each image [N, C, H, W]: the representations [N, D] and the style targets
    {"flip": [N] int64, "scale": [N, 1], "position": [N, 2]}."""
    model.eval()
    recipe = augment.RECIPES[STYLE_RECIPE]
    features, drawn = [], []
    for start in range(0, len(images), batch):
        x = augment.to_float(images[start:start + batch].to(device))
        params = augment.draw_crop_flip(len(x), recipe, generator, device)
        features.append(model.represent(augment.apply_crop_flip(x, params)).float())
        drawn.append(params)
    p = augment.CropFlip(*(torch.cat(column) for column in zip(*drawn)))
    targets = {"flip": (p.fy < 0).long(), "scale": (p.w * p.h)[:, None], "position": torch.stack([p.cx, p.cy], 1)}
    return torch.cat(features), targets


def evaluate_style(model, dataset, device, probe_epochs, seed=0, train_images=STYLE_TRAIN_IMAGES):
    """{target: {probe kind: train_probe result}} for the TARGETS, on `dataset` (data.Dataset)."""
    generator = torch.Generator(device).manual_seed(seed)
    splits = {name: augmented_split(model, images, generator, device) for name, images in
              (("train", dataset.train.images[:train_images]), ("val", dataset.val.images),
               ("test", dataset.test.images))}
    results = {}
    for target in TARGETS:
        columns = {name: (features, targets[target]) for name, (features, targets) in splits.items()}
        if target == "flip":
            task = classification(2)
        else:
            train_targets = columns["train"][1]
            mean, std = train_targets.mean(dim=0), train_targets.std(dim=0).clamp_min(1e-8)
            columns = {name: (features, (values - mean) / std) for name, (features, values) in columns.items()}
            task = regression(train_targets.shape[1])
        results[target] = {kind: train_probe(kind, task, columns["train"], columns["val"], columns["test"],
                                             probe_epochs, seed) for kind in PROBES}
    return results
