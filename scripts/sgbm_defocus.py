"""Defocus maps from dual-pixel views by stereo matching (OpenCV StereoSGBM), scored against ground truth, and
optionally against a trained stage-1 DefocusMapNet on the same images.

    python scripts/sgbm_defocus.py --data datasets/synthetic_dpdd --split test
    python scripts/sgbm_defocus.py --opt options/test/test_defocus_map_synthetic.yml   (adds the learned map, and the
                                                                                    untrained arch's matching cue)

DP disparity is small and signed, so SGBM searches a range on both sides of zero (``--max-disp``) on views
up-sampled ``--upsample`` times horizontally, which gives sub-pixel disparities (SGBM itself quantises to 1/16 px).
Invalid matches are filled from the nearest valid pixel. The map is half the disparity (the CoC radius in DefocusGAN's
convention, positive when the left view is shifted right = behind the focal plane). The metrics are affine
invariant (AIWE) or rank based (Spearman), so the disparity-to-CoC scale does not affect them.
"""
import argparse
import numpy as np
import time
import torch

from defocusgan_plugin.data.dpdd_dataset import DPDDDataset
from defocusgan_plugin.metrics.defocus_map_metric import calculate_aiwe1, calculate_aiwe2, calculate_spearman_error

METRICS = (('AIWE(1)', calculate_aiwe1), ('AIWE(2)', calculate_aiwe2), ('1-|rho|', calculate_spearman_error))


def to_gray8(view):
    """(3, H, W) float RGB tensor in [0, 1] -> HxW uint8 (what StereoSGBM accepts)."""
    return (view.mean(0).numpy() * 255.0 + 0.5).astype(np.uint8)


def sgbm_defocus(left, right, max_disp=4, upsample=4, block_size=5):
    """Signed defocus map (CoC radius in px) of one DP pair with OpenCV's StereoSGBM.

    Args:
        left, right (ndarray): HxW uint8 views.
        max_disp (int): Largest |disparity| searched, in original pixels.
        upsample (int): Horizontal up-sampling before matching (sub-pixel resolution).
        block_size (int): SGBM matching block size (odd).

    Returns:
        ndarray: HxW float32 map, disparity / 2.
    """
    import cv2
    from scipy import ndimage
    h, w = left.shape
    size = (w * upsample, h)
    left_up = cv2.resize(left, size, interpolation=cv2.INTER_CUBIC)
    right_up = cv2.resize(right, size, interpolation=cv2.INTER_CUBIC)
    num = int(np.ceil(2 * max_disp * upsample / 16.0)) * 16  # SGBM wants a multiple of 16
    matcher = cv2.StereoSGBM_create(
        minDisparity=-num // 2,
        numDisparities=num,
        blockSize=block_size,
        P1=8 * block_size**2,
        P2=32 * block_size**2,
        uniquenessRatio=5,
        mode=cv2.STEREO_SGBM_MODE_HH)
    disp = matcher.compute(left_up, right_up).astype(np.float32) / 16.0
    invalid = disp < -num // 2
    if invalid.all():
        return np.zeros((h, w), np.float32)
    if invalid.any():
        disp = disp[tuple(ndimage.distance_transform_edt(invalid, return_distances=False, return_indices=True))]
    disp = cv2.resize(disp, (w, h), interpolation=cv2.INTER_AREA) / upsample
    return 0.5 * disp


def load_map_net(opt_path, load_weights=True):
    """DefocusMapNet built (and loaded, unless ``load_weights`` is False) as the test option file says
    (network_map, path.pretrain_network_map)."""
    from basicsr.archs import build_network

    import defocusgan_plugin  # noqa: F401  (registers the archs)
    from defocusgan_plugin.utils.checkpoint import load_state_dict_from
    from defocusgan_plugin.utils.options import read_yaml
    opt = read_yaml(opt_path)
    torch.manual_seed(0)
    net = build_network(dict(opt['network_map']))
    if not load_weights:
        return net.eval()
    weights = (opt.get('path') or {}).get('pretrain_network_map')
    if not weights:
        raise ValueError(f'{opt_path}: path.pretrain_network_map must point to a trained net_map_*.pth.')
    net.load_state_dict(load_state_dict_from(weights, opt['path'].get('param_key_map', 'params'))[0])
    return net.eval()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data', default='datasets/synthetic_dpdd', help='DPDD-layout root with {split}_defocus')
    parser.add_argument('--split', default='test')
    parser.add_argument('--opt', help='test option file of a trained DefocusMapModel (adds its map to the table)')
    parser.add_argument('--max-disp', type=int, default=8, help='largest |disparity| searched, px')
    parser.add_argument('--upsample', type=int, default=4)
    parser.add_argument('--block-size', type=int, default=5)
    parser.add_argument('--per-image', action='store_true', help='print every image')
    args = parser.parse_args()

    dataset = DPDDDataset(dict(dataroot=args.data, split=args.split, phase='test', input='dual', name=args.split))
    if 'defocus' not in dataset.keys:
        raise SystemExit(f'{args.data}: no {args.split}_defocus folder of ground-truth maps to score against.')
    methods = {
        'SGBM':
        lambda s: sgbm_defocus(to_gray8(s['lq_l']), to_gray8(s['lq_r']), args.max_disp, args.upsample, args.block_size)
    }
    if args.opt:
        # the trained network, and the same arch untrained: its matching cue alone, to show what training adds
        for name, net in (('DefocusMapNet', load_map_net(args.opt)), ('untrained', load_map_net(args.opt, False))):
            methods[name] = lambda sample, net=net: net(sample['lq'][None])[0, 0].numpy()

    scores = {name: [] for name in methods}
    seconds = dict.fromkeys(methods, 0.0)
    for sample in dataset:
        gt = sample['defocus'][0].numpy()
        for name, method in methods.items():
            start = time.perf_counter()
            with torch.no_grad():
                pred = method(sample)
            seconds[name] += time.perf_counter() - start
            row = [fn(pred, gt) for _, fn in METRICS]
            scores[name].append(row)
            if args.per_image:
                print(f'{sample["lq_path"]:<60s} {name:<14s} ' + ' '.join(f'{v:8.4f}' for v in row))
    print(f'\nDefocus maps on {args.data} ({args.split}, {len(dataset)} images); lower is better.')
    print(f'| method        | {" | ".join(f"{m:>8s}" for m, _ in METRICS)} | s / image |')
    print(f'|---------------|{"|".join("-" * 10 for _ in METRICS)}|-----------|')
    for name in methods:
        mean = np.mean(scores[name], axis=0)
        print(f'| {name:<13s} | {" | ".join(f"{v:8.4f}" for v in mean)} | {seconds[name] / len(dataset):9.3f} |')


if __name__ == '__main__':
    main()
