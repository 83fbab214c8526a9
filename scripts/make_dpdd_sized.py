"""Writes a DPDD-sized stand-in set (1680x1120, 16-bit PNG, DPDD layout) for data-loader benchmarks.

    python scripts/make_dpdd_sized.py --out datasets/dpdd_sized --images 6

Only the size, bit depth, layout and compressibility matter here, not the optics: each image is one of
scikit-image's bundled photos scaled to cover the frame; the blurred views are Gaussian blurs of it (the DP views
shifted by a few pixels), and every file gets sensor-like noise so that the PNGs compress about as badly as the real
DPDD files (roughly 60-70 % of the raw 11.3 MB). Deterministic for a given --seed.
"""
import argparse
import cv2
import numpy as np
import os
import time
from os import path as osp

FOLDERS = {
    'target': '{split}_c/target',
    'combined': '{split}_c/source',
    'left': '{split}_l/source',
    'right': '{split}_r/source'
}


def base_images():
    """scikit-image's bundled colour photos, HWC BGR float32 in [0, 1]."""
    import skimage.data
    left, _, _ = skimage.data.stereo_motorcycle()
    photos = [left] + [getattr(skimage.data, name)() for name in ('astronaut', 'chelsea', 'coffee', 'rocket')]
    return [np.ascontiguousarray(p[..., ::-1]).astype(np.float32) / 255.0 for p in photos]


def cover(img, width, height):
    """Scales ``img`` to cover width x height and centre-crops it."""
    scale = max(width / img.shape[1], height / img.shape[0])
    size = (max(width, round(img.shape[1] * scale)), max(height, round(img.shape[0] * scale)))
    img = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
    top, left = (img.shape[0] - height) // 2, (img.shape[1] - width) // 2
    return img[top:top + height, left:left + width]


def make_views(sharp, rng, blur_sigma=3.0, shift=3):
    """Target, combined and DP views of one frame (the views are the blur shifted left / right)."""
    blurred = cv2.GaussianBlur(sharp, (0, 0), blur_sigma)
    return {
        'target': sharp,
        'combined': blurred,
        'left': np.roll(blurred, -shift, axis=1),
        'right': np.roll(blurred, shift, axis=1)
    }


def write_dpdd_sized(out_dir, images=6, width=1680, height=1120, noise=0.002, split='train', seed=0):
    """Writes ``images`` DPDD-layout samples of ``width`` x ``height`` 16-bit PNG under ``out_dir``.

    Args:
        out_dir (str): Output root; ``{split}_c/source``, ``{split}_c/target``, ``{split}_l/source`` and
            ``{split}_r/source`` are created.
        images (int): Number of samples (the bundled photos are reused, each frame with its own crop shift).
        width (int): Image width (DPDD: 1680).
        height (int): Image height (DPDD: 1120).
        noise (float): Standard deviation of the Gaussian noise added to every file (in [0, 1] units).
        split (str): Split name of the folders.
        seed (int): Seed of the noise and the per-frame shifts.

    Returns:
        list[str]: The written file paths.
    """
    rng = np.random.default_rng(seed)
    photos = base_images()
    written = []
    for i in range(images):
        sharp = cover(photos[i % len(photos)], width + 64, height + 64)
        dy, dx = rng.integers(0, 65, size=2)  # a different frame each time a photo is reused
        sharp = np.ascontiguousarray(sharp[dy:dy + height, dx:dx + width])
        for key, img in make_views(sharp, rng).items():
            noisy = img + rng.normal(0.0, noise, img.shape).astype(np.float32)
            quant = (np.clip(noisy, 0.0, 1.0) * 65535.0 + 0.5).astype(np.uint16)
            path = osp.join(out_dir, FOLDERS[key].format(split=split), f'frame_{i:04d}.png')
            os.makedirs(osp.dirname(path), exist_ok=True)
            if not cv2.imwrite(path, quant):
                raise OSError(f'Cannot write {path}')
            written.append(path)
    return written


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='datasets/dpdd_sized', help='output root (git-ignored datasets/ by default)')
    parser.add_argument('--images', type=int, default=6, help='number of samples (4 PNG files each)')
    parser.add_argument('--width', type=int, default=1680)
    parser.add_argument('--height', type=int, default=1120)
    parser.add_argument('--noise', type=float, default=0.002, help='noise std in [0, 1] units (sets PNG size)')
    parser.add_argument('--split', default='train')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    start = time.time()
    paths = write_dpdd_sized(args.out, args.images, args.width, args.height, args.noise, args.split, args.seed)
    mb = sum(osp.getsize(p) for p in paths) / len(paths) / 2**20
    print(f'Wrote {len(paths)} files ({args.images} samples, {args.width}x{args.height} 16-bit, {mb:.1f} MB per '
          f'file on average) to {args.out} in {time.time() - start:.1f} s')


if __name__ == '__main__':
    main()
