"""Writes a FAKE dual-pixel set in the exact layout of the Pixel-4 release of Xin et al. (ICCV 2021).

    python scripts/make_fake_pixel4.py --out datasets/pixel4_fake                  # 3 scenes, 2016x1512 (~1 min each)
    python scripts/make_fake_pixel4.py --out datasets/pixel4_small --crop 168 224  # 252x336 frames, seconds

Nothing is downloaded and nothing is real: scikit-image photos and textures at random depths, rendered with the
plugin's renderer through a synthetic spatially varying 6x8 calibration (see
:mod:`defocusgan_plugin.data.fake_pixel4`). The default geometry is the real one (centre crop 1008x1344 of a 2016x1512
frame, 61x61 kernels); ``--crop H W`` scales everything (frame 1.5x the crop, kernels and blur by W / 1344). Run the
joint optimiser on it with options/test/test_dp_joint_pixel4.yml (dataroot, kernel paths, crop and frame_size set to
the folder and the crop).
"""
import argparse
import time

from defocusgan_plugin.data.fake_pixel4 import FULL_CROP, write_fake_pixel4


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
    args = parser.parse_args()
    start = time.time()
    info = write_fake_pixel4(args.out, num_scenes=args.scenes, crop=tuple(args.crop), seed=args.seed)
    print(f'Wrote {args.scenes} fake scenes to {args.out} in {time.time() - start:.0f} s: frames '
          f'{info["frame"][1]}x{info["frame"][0]} (width x height), centre crop {info["crop"][0]}x{info["crop"][1]} '
          f'(rows {info["top"]}:{info["top"] + info["crop"][0]}, '
          f'cols {info["left"]}:{info["left"] + info["crop"][1]}), '
          f'kernels {info["kernel_size"]}x{info["kernel_size"]}, calibration radius {info["radius"]:.2f} px.')
    print(f'Options: datasets.test_1.crop and dp_joint.kernels.frame_size [{info["crop"][0]}, {info["crop"][1]}], '
          f'dp_joint.solver.max_radius ~{1.9 * info["radius"]:.1f}.')


if __name__ == '__main__':
    main()
