"""Writes a FAKE dual-pixel set in the exact layout of the Pixel-4 release of Xin et al. (ICCV 2021).

    python scripts/make_fake_pixel4.py --out datasets/pixel4_fake                  # 3 scenes, 2016x1512 (~1 min each)
    python scripts/make_fake_pixel4.py --out datasets/pixel4_small --crop 168 224  # 252x336 frames, seconds
    # rendered with PSFs other than the calibration's, phone-level noise, layers up to ~24 px (the benchmark's set)
    python scripts/make_fake_pixel4.py --out datasets/pixel4_mismatch --mismatch --max-scale 1.9

Nothing is downloaded and nothing is real: scikit-image photos and textures at random depths, rendered with the
plugin's renderer through a synthetic spatially varying 6x8 calibration (see
:mod:`defocusgan_plugin.data.fake_pixel4`). The default geometry is the real one (centre crop 1008x1344 of a 2016x1512
frame, 61x61 kernels); ``--crop H W`` scales everything (frame 1.5x the crop, kernels and blur by W / 1344). By default
the views are rendered through the calibration itself (a perfect forward model for the solver); ``--mismatch``
renders them with other PSFs (per-cell scale error, depth-dependent shape, soft aperture edges, a finer grid) and
phone-level noise, each amount a flag. Run the joint optimiser on it with options/test/test_dp_joint_pixel4.yml
(dataroot, kernel paths, crop and frame_size set to the folder and the crop).
"""
import argparse
import time

from defocusgan_plugin.data.fake_pixel4 import FULL_CROP, MISMATCH, SCALE_RANGE, write_fake_pixel4


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', required=True, help='output folder (the dataroot of DPRawPixel4Dataset)')
    parser.add_argument('--scenes', type=int, default=3, help='number of scenes (001, 002, ...)')
    parser.add_argument(
        '--crop',
        type=int,
        nargs=2,
        default=list(FULL_CROP),
        metavar=('H', 'W'),
        help='calibrated centre crop, a multiple of the 6x8 grid (default 1008 1344, the Pixel 4)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--max-scale',
        type=float,
        default=SCALE_RANGE[1],
        help=f'largest kernel scale of the scenes, in calibration radii (~12.6 px at full size; default '
        f'{SCALE_RANGE[1]:g}; 1.9 for layers up to ~24 px)')
    parser.add_argument(
        '--noise',
        type=float,
        nargs=2,
        default=None,
        metavar=('SHOT', 'READ'),
        help='noise variance = SHOT * x + READ^2 (default 4e-5 1e-3; with --mismatch the phone level, 1e-3 1e-3 at '
        'full size, binned to a smaller crop: variance x (W / 1344)^2)')
    group = parser.add_argument_group('calibration mismatch (any of these turns --mismatch on)')
    group.add_argument('--mismatch', action='store_true', help='render with PSFs other than the calibration')
    group.add_argument(
        '--scale-error',
        type=float,
        default=None,
        help=f'std of the per-cell kernel scale error (default {MISMATCH["scale_error"]:g})')
    group.add_argument(
        '--shape-change',
        type=float,
        default=None,
        help=f'strength of the depth-dependent shape change (default {MISMATCH["shape_change"]:g})')
    group.add_argument(
        '--soft-edge',
        type=float,
        default=None,
        help=f'aperture-edge softening, fraction of the radius (default {MISMATCH["soft_edge"]:g})')
    group.add_argument(
        '--subgrid',
        type=int,
        default=None,
        help=f'the true PSF varies on a grid this many times finer than the calibration (default '
        f'{MISMATCH["subgrid"]})')
    args = parser.parse_args()
    amounts = {k: getattr(args, k) for k in ('scale_error', 'shape_change', 'soft_edge', 'subgrid')}
    amounts = {k: v for k, v in amounts.items() if v is not None}
    mismatch = (amounts or True) if (args.mismatch or amounts) else None
    start = time.time()
    info = write_fake_pixel4(
        args.out,
        num_scenes=args.scenes,
        crop=tuple(args.crop),
        seed=args.seed,
        noise=args.noise,
        mismatch=mismatch,
        max_scale=args.max_scale)
    print(f'Wrote {args.scenes} fake scenes to {args.out} in {time.time() - start:.0f} s: frames '
          f'{info["frame"][1]}x{info["frame"][0]} (width x height), centre crop {info["crop"][0]}x{info["crop"][1]} '
          f'(rows {info["top"]}:{info["top"] + info["crop"][0]}, '
          f'cols {info["left"]}:{info["left"] + info["crop"][1]}), '
          f'kernels {info["kernel_size"]}x{info["kernel_size"]}, calibration radius {info["radius"]:.2f} px, '
          f'layers up to ~{args.max_scale * info["radius"]:.1f} px, noise {info["noise"][0]:g} {info["noise"][1]:g}.')
    if info['mismatch']:
        m = info['mismatch']
        print(f'Rendered with mismatched PSFs: scale error {m["scale_error"]:g} per cell, shape change '
              f'{m["shape_change"]:g}, soft edges {m["soft_edge"]:g}, {m["subgrid"]}x finer grid (fake_set.json).')
    print(f'Options: datasets.test_1.crop and dp_joint.kernels.frame_size [{info["crop"][0]}, {info["crop"][1]}], '
          f'dp_joint.solver.max_radius ~{max(1.9, args.max_scale * 1.05) * info["radius"]:.1f}.')


if __name__ == '__main__':
    main()
