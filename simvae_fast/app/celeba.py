"""CelebA in torchvision's layout: <root>/celeba/ holding img_align_celeba/*.jpg (or img_align_celeba.zip, the
published archive of that folder), list_attr_celeba.txt and list_eval_partition.txt.

list_attr_celeba.txt: the image count, the 40 attribute names, then "<file> ±1 x 40" per image;
list_eval_partition.txt: "<file> 0|1|2" (train, validation, test). The 178x218 aligned images are centre-cropped
to their 178x178 square and resized to 64x64 (PIL, bilinear with antialiasing) once; the result, uint8
[N, 3, 64, 64] in the partition file's order, is cached in the user cache (celeba-64/, keyed by the source
files), so later loads read it with a memory map. MD5s of the text files (and of the zip, when it is read) are
checked against torchvision's published values unless verify=False.

Probe targets (Dataset.targets): hair colour, the official code's five classes: black, blond, brown, grey hair,
or none of these; images with more than one of the four hair attributes are dropped from it (label -1), as the
issue asks; and gender (the Male attribute). Splits: the official train partition; `val_size` images drawn
(seeded) from the official validation partition; the official test partition. No package registry holds CelebA:
users bring it.
"""
import contextlib
import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from simvae_fast.app import dataset

FOLDER, IMAGES, ZIP = "celeba", "img_align_celeba", "img_align_celeba.zip"
ATTRIBUTES, PARTITION = "list_attr_celeba.txt", "list_eval_partition.txt"
MD5 = {ZIP: "00d2c5bc6d35e252742224ab0c1e8fcb", ATTRIBUTES: "75e246fa4810816ffd6ee81facbd244c",
       PARTITION: "d32c9cbf5e040fd4025c592c306e6668"}
SIZE = 64
HAIR = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")
TARGETS = (("hair", ("black", "blond", "brown", "grey", "none of these")), ("gender", ("female", "male")))
PUBLISHED = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (Align&Cropped images, Anno/, Eval/)"
NOT_FETCHABLE = (f"celeba cannot be fetched here: no package registry these machines reach holds it. It is published "
                 f"at {PUBLISHED}; put {IMAGES}/*.jpg (or {ZIP}), {ATTRIBUTES} and {PARTITION} in <root>/{FOLDER}/, "
                 "and pass --data-root <root>")


def find_files(data_root=None):
    """{"images": the folder or zip, ATTRIBUTES: path, PARTITION: path} of the first candidate folder with all."""
    tried = [root / FOLDER for root in dataset.roots(data_root)]
    for folder in tried:
        images = folder / IMAGES if (folder / IMAGES).is_dir() else folder / ZIP
        if images.exists() and (folder / ATTRIBUTES).is_file() and (folder / PARTITION).is_file():
            return {"images": images, ATTRIBUTES: folder / ATTRIBUTES, PARTITION: folder / PARTITION}
    raise dataset.DatasetNotFoundError(f"dataset 'celeba' not found in {', '.join(map(str, tried))}. {NOT_FETCHABLE}")


def read_partition(path):
    """[(file name, partition 0/1/2)] in the file's order."""
    rows = [line.split() for line in Path(path).read_text().splitlines() if line.strip()]
    if any(len(r) != 2 or r[1] not in ("0", "1", "2") for r in rows):
        raise ValueError(f"{path}: expected lines '<file> 0|1|2'")
    return [(name, int(part)) for name, part in rows]


def read_attributes(path):
    """(attribute names, {file name: int8 [40] of ±1})."""
    lines = Path(path).read_text().splitlines()
    names = lines[1].split()
    table = {}
    for line in lines[2:]:
        fields = line.split()
        if fields:
            if len(fields) != len(names) + 1:
                raise ValueError(f"{path}: expected a file name and {len(names)} values per line, got {line!r}")
            table[fields[0]] = np.array(fields[1:], dtype=np.int8)
    return names, table


def labels(names, rows):
    """[N, 2] int64: hair colour (0..3 for one of HAIR, 4 for none, -1 for several) and gender (Male == 1)."""
    missing = [n for n in (*HAIR, "Male") if n not in names]
    if missing:
        raise ValueError(f"{ATTRIBUTES}: no attribute {', '.join(missing)}")
    hair = np.stack([rows[:, names.index(n)] == 1 for n in HAIR], 1)
    count = hair.sum(1)
    hair_class = np.where(count == 0, len(HAIR), np.where(count == 1, hair.argmax(1), -1))
    return torch.from_numpy(np.stack([hair_class, rows[:, names.index("Male")] == 1], 1).astype(np.int64))


def preprocess(image):
    """A PIL image -> uint8 [3, SIZE, SIZE]: its centred largest square, resized (bilinear, antialiased)."""
    w, h = image.size
    side = min(w, h)
    left, top = round((w - side) / 2), round((h - side) / 2)  # torchvision's CenterCrop offsets
    square = image.convert("RGB").crop((left, top, left + side, top + side))  # cropped first: resize's filter
    out = square.resize((SIZE, SIZE), Image.BILINEAR)  # would read pixels outside a box
    return np.asarray(out, dtype=np.uint8).transpose(2, 0, 1)


def _cache_path(paths):
    """The cache file for these source files: keyed by their paths, sizes and modification times."""
    key = hashlib.sha256()
    for path in (paths["images"], paths[ATTRIBUTES], paths[PARTITION]):
        stat = Path(path).stat()
        key.update(f"{Path(path).resolve()}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return dataset.cache_dir() / f"celeba-{SIZE}" / f"{key.hexdigest()[:20]}.npy"


def cached_images(paths, files, verify=True):
    """uint8 [N, 3, SIZE, SIZE] of `files` (memory-mapped), from the cache or decoded once into it."""
    cache = _cache_path(paths)
    if cache.is_file():
        return np.load(cache, mmap_mode="r")
    source = Path(paths["images"])
    if source.suffix == ".zip" and verify:
        dataset.check_md5(source, MD5[ZIP])
    out = np.empty((len(files), 3, SIZE, SIZE), dtype=np.uint8)
    with zipfile.ZipFile(source) if source.suffix == ".zip" else contextlib.nullcontext() as archive:
        for i, name in enumerate(tqdm(files, desc=f"celeba: {SIZE} px cache", unit="image", leave=False)):
            try:
                f = archive.open(f"{IMAGES}/{name}") if source.suffix == ".zip" else open(source / name, "rb")
            except (KeyError, FileNotFoundError) as err:
                raise dataset.DatasetNotFoundError(f"celeba: image {name} of {PARTITION} is not in {source}") from err
            with f, Image.open(f) as image:
                out[i] = preprocess(image)
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(".partial.npy")
    np.save(partial, out)
    os.replace(partial, cache)
    return np.load(cache, mmap_mode="r")


def load(data_root=None, *, val_size=5000, split_seed=0, limit_train=None, limit_test=None, verify=True):
    """CelebA as a Dataset (simvae_fast.app.dataset; module docstring)."""
    paths = find_files(data_root)
    if verify:
        for name in (ATTRIBUTES, PARTITION):
            dataset.check_md5(paths[name], MD5[name])
    partition = read_partition(paths[PARTITION])
    names, table = read_attributes(paths[ATTRIBUTES])
    files = [name for name, _ in partition]
    unlabelled = [name for name in files if name not in table]
    if unlabelled:
        raise ValueError(f"{paths[ATTRIBUTES]}: no attributes for {len(unlabelled)} images, e.g. {unlabelled[0]}")
    images = cached_images(paths, files, verify)
    targets = labels(names, np.stack([table[name] for name in files]))
    part = np.array([p for _, p in partition])

    def split(idx):
        idx = np.asarray(idx, dtype=np.int64)
        return dataset.Split(torch.from_numpy(np.ascontiguousarray(images[idx])), targets[torch.from_numpy(idx)])

    train_idx, val_pool, test_idx = (np.flatnonzero(part == p) for p in (0, 1, 2))
    if not 0 <= val_size <= len(val_pool):
        raise ValueError(f"val_size: expected 0 <= val_size <= {len(val_pool)} images of CelebA's validation "
                         f"partition, got {val_size}")
    order = torch.randperm(len(val_pool), generator=torch.Generator().manual_seed(split_seed)).numpy()
    return dataset.Dataset("celeba", Path(paths[PARTITION]).parent, TARGETS, split(train_idx[:limit_train]),
                        split(val_pool[order[:val_size]]), split(test_idx[:limit_test]))


def write_dataset(root, images, attributes, partition, as_zip=False):
    """Lay out a CelebA-shaped dataset under <root>/celeba/: images uint8 [N, H, W, 3] saved as JPEGs
    000001.jpg..., attributes int [N, 40] of ±1 (named as the published file names them: ATTRIBUTE_NAMES),
    partition [N] of 0/1/2; in a zip with as_zip. Returns the folder (load it with verify=False)."""
    folder = Path(root) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    files = [f"{i + 1:06d}.jpg" for i in range(len(images))]
    archive = zipfile.ZipFile(folder / ZIP, "w") if as_zip else None
    if not as_zip:
        (folder / IMAGES).mkdir(exist_ok=True)
    for name, image in zip(files, images):
        path = folder / IMAGES / name if not as_zip else folder / name
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(path, quality=95, subsampling=0)  # 4:4:4
        if archive is not None:
            archive.write(path, f"{IMAGES}/{name}")
            path.unlink()
    if archive is not None:
        archive.close()
    rows = [f"{name} " + " ".join(f"{int(v):2d}" for v in row) for name, row in zip(files, attributes)]
    (folder / ATTRIBUTES).write_text("\n".join([str(len(files)), " ".join(ATTRIBUTE_NAMES), *rows]) + "\n")
    (folder / PARTITION).write_text("".join(f"{name} {int(p)}\n" for name, p in zip(files, partition)))
    return folder


ATTRIBUTE_NAMES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips", "Big_Nose",
    "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses",
    "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie", "Young",
)
