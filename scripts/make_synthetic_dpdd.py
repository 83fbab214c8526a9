"""Writes synthetic dual-pixel datasets (DPDD layout, 16-bit PNG, GT signed CoC maps).

    python scripts/make_synthetic_dpdd.py --out datasets/synthetic_dpdd            # the embedded set (default)
    python scripts/make_synthetic_dpdd.py --photos datasets/photos --psf-mix all --out datasets/photos_dpdd

Without ``--photos``: the embedded set, from images that ship with scikit-image (Middlebury motorcycle with real
disparity; photos with procedural depth); nothing is downloaded and the output is deterministic for a given --seed.

With ``--photos DIR [DIR ...]``: every photo found (recursively) gives fixed-size crops, each rendered at several
focal planes with procedural depth (or the photo's ``<stem>.invdepth.npy``), and whole photos are split into train /
val / test (``--val-photos``, ``--test-photos``); ``manifest.json`` lists the split of every source file and its
licence (read from ``DIR/manifest.json`` as written by ``scripts/fetch_photos.sh``).

``--psf-mix`` draws each image's PSF from named families (see ``dp_synthesis.parse_psf_mix``); ``none`` (default)
renders everything with one model, as the embedded set always was.
"""
import argparse
import json
import os
import time

from defocusgan_plugin.data.dp_synthesis import parse_psf_mix, write_photo_dpdd, write_synthetic_dpdd


def read_licences(roots):
    """Per-photo records of each root's ``manifest.json`` (fetch_photos.sh), keyed as ``find_photos`` names them."""
    licences = {}
    for root in roots:
        path = os.path.join(root, 'manifest.json')
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            records = json.load(f)
        records = records.get('photos', records) if isinstance(records, dict) else records
        base = os.path.basename(os.path.normpath(root))
        for record in records:
            licences[f"{base}/{record['file']}"] = {k: v for k, v in record.items() if k != 'file'}
    return licences


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='datasets/synthetic_dpdd', help='output root')
    parser.add_argument('--coc-max', type=float, default=8.0, help='largest |CoC| radius in pixels')
    parser.add_argument('--psf-mix', default='none', help="PSF families, e.g. 'all' or 'butterworth:2,soft_disk,noise'")
    parser.add_argument('--seed', type=int, default=0)
    embedded = parser.add_argument_group('embedded set (without --photos)')
    embedded.add_argument('--max-side', type=int, default=384, help='longer side of each scene in pixels')
    embedded.add_argument('--train', type=int, default=5, help='training images (focal planes) per scene')
    embedded.add_argument('--val', type=int, default=1, help='validation images per scene')
    embedded.add_argument('--test', type=int, default=1, help='test images per scene')
    photos = parser.add_argument_group('photo sets')
    photos.add_argument('--photos', nargs='+', metavar='DIR', help='folders of photos (searched recursively)')
    photos.add_argument('--crop', type=int, nargs=2, default=(384, 512), metavar=('H', 'W'), help='crop size')
    photos.add_argument('--crops-per-photo', type=int, nargs=3, default=(3, 1, 2), metavar=('TRAIN', 'VAL', 'TEST'))
    photos.add_argument('--focus-per-crop', type=int, nargs=3, default=(2, 1, 1), metavar=('TRAIN', 'VAL', 'TEST'))
    photos.add_argument('--val-photos', type=int, default=6, help='photos held out for validation')
    photos.add_argument('--test-photos', type=int, default=10, help='photos held out for testing')
    args = parser.parse_args()
    try:
        mix = parse_psf_mix(args.psf_mix)
    except ValueError as err:
        parser.error(str(err))
    if args.crop[0] % 8 or args.crop[1] % 8:
        parser.error(f'--crop must be multiples of 8, got {args.crop}')
    start = time.time()
    if args.photos:
        counts = write_photo_dpdd(
            args.out,
            args.photos,
            crop=tuple(args.crop),
            crops_per_photo=tuple(args.crops_per_photo),
            focus_per_crop=tuple(args.focus_per_crop),
            num_val=args.val_photos,
            num_test=args.test_photos,
            coc_max=args.coc_max,
            psf_mix=mix,
            seed=args.seed,
            licences=read_licences(args.photos))
    else:
        counts = write_synthetic_dpdd(
            args.out,
            max_side=args.max_side,
            coc_max=args.coc_max,
            focus_per_scene=(args.train, args.val, args.test),
            seed=args.seed,
            psf_mix=mix)
    print(f'Wrote {counts} images to {args.out} in {time.time() - start:.1f} s')


if __name__ == '__main__':
    main()
