"""What limits the "defocus map + deconvolution" path: the layered Wiener deconvolution with the GT map and the set's
true PSFs (an oracle: no map or kernel error), on a synthetic DP set made by ``make_synthetic_dpdd.py``.

    python scripts/deconv_oracle.py --data datasets/photos_dpdd --split val --regs 0.01 0.03 0.1 0.3

Each image is deblurred three times, each time from a blurred image with less in it than the last:

* ``stored``: the set's blurred combined view (its noise, vignetting and depth edges);
* ``clean``: the same photo, map and PSF rendered again without noise and vignetting (depth edges remain);
* ``uniform``: the same photo and PSF rendered with one blur radius everywhere (the image's mean |CoC|: no edges).

Three deconvolutions (``--methods``):

* ``wiener`` (:func:`defocusgan_plugin.ops.deconv.deconv_layered`) assumes each pixel is blurred by the kernel of its
  own radius (the "gather" model), with the combined view's kernels at integer radii;
* ``occlusion`` (:func:`defocusgan_plugin.ops.deconv.deconv_occlusion`) solves the renderer's own model: its layers
  (every 0.5 px of signed CoC), its left/right kernels, blurred layers composited over each other (occlusion);
* ``occlusion_dp``: the same model fitted to the two DP views, each by its own half-aperture kernels, instead of to
  their mean (``deconv.views: dp`` of ``DefocusDeconvModel``).

``--map-errors`` adds rows that deconvolve the stored images with a GT map changed in one controlled way, to show which
error of an estimated map costs the deconvolution most: ``scale:F`` (every radius times F), ``offset:D`` (plus D
pixels), ``noise:S`` (Gaussian noise of S pixels, fixed seed), ``box:R`` (a box mean of radius R: blurred depth edges).

How well each model explains the clean rendering is printed beside the gains: the PSNR of the model's reblur of the
sharp image against the rendered blurred image. PSF, noise and vignetting of each image come from the set's
``manifest.json`` (without one: the embedded set's default PSF). Prints a markdown table; PSNR on [0, 1] sRGB images.
"""
import argparse
import glob
import json
import numpy as np
import torch
from os import path as osp

import defocusgan_plugin  # noqa: F401  # isort: skip  (before basicsr: torchvision alias, registrations)
from basicsr.utils import img2tensor

from defocusgan_plugin.data.dp_synthesis import DEFAULT_PSF, render_layers, synthesize_dp
from defocusgan_plugin.ops.deconv import deconv_layered, deconv_occlusion
from defocusgan_plugin.ops.filters import box_mean
from defocusgan_plugin.ops.render import linear_to_srgb, reblur_coc, render_layered, srgb_to_linear
from defocusgan_plugin.utils.img_io import read_image

CONDITIONS = ('stored', 'clean', 'uniform')
METHODS = ('wiener', 'occlusion', 'occlusion_dp')
MAP_ERRORS = ('scale', 'offset', 'noise', 'box')
VIEWS = ('combined', 'left', 'right')


def read(path):
    return read_image(path)[0][..., ::-1].copy()  # RGB float32 in [0, 1], 8- or 16-bit


def psnr(a, b):
    return float(10 * torch.log10(1 / (a - b).pow(2).mean()))


def image_formation(data):
    """Image name -> its PSF options, from the set's manifest (the embedded set's default without one)."""
    path = osp.join(data, 'manifest.json')
    if not osp.isfile(path):
        return {}
    with open(path) as f:
        manifest = json.load(f)
    return {image['name']: image['psf'] for photo in manifest.get('photos', []) for image in photo.get('images', [])}


def map_error(spec):
    """One ``--map-errors`` item, ``kind:value`` -> (its row label, a function changing a GT map (H, W))."""
    kind, _, value = spec.partition(':')
    try:
        value = float(value)
    except ValueError:
        value = None
    if kind not in MAP_ERRORS or value is None or (kind == 'box' and value != int(value)):
        raise argparse.ArgumentTypeError(f'--map-errors {spec!r}: expected one of {MAP_ERRORS} and a number, e.g. '
                                         "'scale:1.15', 'offset:0.5', 'noise:0.5', 'box:7' (an integer radius)")
    changes = {
        'scale': lambda coc: coc * value,
        'offset': lambda coc: coc + value,
        'noise': lambda coc: coc + value * np.random.default_rng(0).standard_normal(coc.shape).astype(np.float32),
        'box': lambda coc: box_mean(torch.from_numpy(coc)[None, None], int(value))[0, 0].numpy()
    }
    return f'stored, GT map {kind} {value:g}', changes[kind]


def combined_kernels(psf, max_radius):
    """The combined view's kernels of the radii 0..max_radius (mean of the DP halves: the full aperture)."""
    radii, kernels = render_layers(float(max_radius), psf, layer_step=1.0)
    return kernels[:, radii >= 0].flip(1).mean(0)


def model_fidelity(method, truth, coc, kernels, layers, image):
    """PSNR of a method's image model (the sharp image reblurred with the GT map) against the rendered image."""
    if method == 'wiener':
        model = reblur_coc(truth, coc.abs(), kernels, linear_light=True, composite='gather')[0]
    else:
        radii, dp_kernels = layers
        views = render_layered(
            srgb_to_linear(truth), coc, dp_kernels, float(radii[0]), float(radii[1] - radii[0]), mode='over')
        model = linear_to_srgb(views if method == 'occlusion_dp' else views.mean(1))
    return psnr(model.clamp(0, 1), image)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data', default='datasets/photos_dpdd', help='a synthetic DPDD-layout set with GT maps')
    parser.add_argument('--split', default='val')
    parser.add_argument('--regs', type=float, nargs='+', default=[0.01, 0.03, 0.1, 0.3], help='prior weights')
    parser.add_argument('--methods', nargs='+', choices=METHODS, default=list(METHODS))
    parser.add_argument('--conditions', nargs='+', choices=CONDITIONS, default=list(CONDITIONS))
    parser.add_argument('--iterations', type=int, default=40, help='occlusion: conjugate-gradient iterations per pass')
    parser.add_argument('--exponent', type=float, default=2.0, help='occlusion: prior exponent (2: quadratic)')
    parser.add_argument('--reweight', type=int, default=2, help='occlusion: IRLS passes after the first (exponent < 2)')
    parser.add_argument(
        '--map-errors',
        nargs='+',
        type=map_error,
        default=[],
        metavar='KIND:VALUE',
        help="extra rows: the stored images deconvolved with a changed GT map (scale:F, offset:D, noise:S, box:R)")
    parser.add_argument('--limit', type=int, default=0, help='first N images only (0: all)')
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    maps = sorted(glob.glob(osp.join(args.data, f'{args.split}_defocus', '*.npy')))[:args.limit or None]
    if not maps:
        parser.error(f'--data {args.data} --split {args.split}: no GT maps in {args.split}_defocus/')
    psfs = image_formation(args.data)
    # a case: (row label, blurred image it deconvolves, change of the GT map)
    cases = [(c, c, None) for c in args.conditions] + [(label, 'stored', change) for label, change in args.map_errors]
    rows = [(case[0], m) for case in cases for m in args.methods]
    gains = {(row, r): [] for row in rows for r in args.regs}
    fidelity, inputs = {row: [] for row in rows}, {case[0]: [] for case in cases}
    for map_path in maps:
        name = osp.splitext(osp.basename(map_path))[0]
        coc = np.load(map_path).astype(np.float32)
        sharp = read(osp.join(args.data, f'{args.split}_c', 'target', f'{name}.png'))
        psf = psfs.get(name, DEFAULT_PSF)
        maps_of = {'stored': coc, 'clean': coc, 'uniform': np.full_like(coc, float(np.abs(coc).mean()))}
        truth = img2tensor(sharp, bgr2rgb=False)[None]
        case_maps = [change(coc) if change else maps_of[cond] for _, cond, change in cases]  # each change once
        max_radius = max(float(np.abs(m).max()) for m in case_maps)
        kernels = combined_kernels(psf, int(np.ceil(max_radius))) if 'wiener' in args.methods else None
        images = {}  # condition -> (combined view, DP views (1, 2, C, H, W))
        for (label, cond, _), case_map in zip(cases, case_maps):
            if cond not in images:
                if cond == 'stored':
                    rendered = {
                        key: read(osp.join(args.data, f'{args.split}_{folder}', 'source', f'{name}.png'))
                        for key, folder in (('combined', 'c'), ('left', 'l'), ('right', 'r'))
                    }
                else:
                    rendered = synthesize_dp(sharp, maps_of[cond], rng=None, psf=psf)
                tensors = {k: img2tensor(np.ascontiguousarray(rendered[k]), bgr2rgb=False)[None] for k in VIEWS}
                images[cond] = tensors['combined'], torch.stack([tensors['left'], tensors['right']], 1)
            image, dp_views = images[cond]
            value = torch.from_numpy(case_map)[None, None]
            layers = None  # the renderer's own layers, for the occlusion models
            if any(m.startswith('occlusion') for m in args.methods):
                layers = render_layers(float(value.abs().max()), psf)
            inputs[label].append(psnr(image, truth))
            for method in args.methods:
                data = dp_views if method == 'occlusion_dp' else image
                if cond != 'stored':
                    fidelity[label, method].append(model_fidelity(method, truth, value, kernels, layers, data))
                for reg in args.regs:
                    if method == 'wiener':
                        restored = deconv_layered(image, value.abs(), kernels, 'wiener', linear_light=True, reg=reg)
                    else:
                        restored = deconv_occlusion(
                            data,
                            value,
                            layers[1],
                            layers[0],
                            reg,
                            args.iterations,
                            linear_light=True,
                            exponent=args.exponent,
                            reweight=args.reweight)
                    gains[(label, method), reg].append(psnr(restored, truth) - inputs[label][-1])
    prior = f'sparse (exponent {args.exponent:g}, {args.reweight} reweighting passes)'
    prior = 'quadratic' if args.exponent == 2 else prior
    print(f'Oracle deconvolution (GT maps, true PSFs), `{args.data}` {args.split} split, {len(maps)} images; '
          f'gain in PSNR over the blurred input (dB), by prior weight (occlusion: {prior} prior, {args.iterations} '
          'CG iterations per pass).\n')
    regs = ' | '.join(f'reg {r:g}' for r in args.regs)
    print(f'| blurred image | method | input PSNR | its model vs image (dB) | {regs} |')
    print('| --- | --- | ---: | ---: | ' + ' | '.join('---:' for _ in args.regs) + ' |')
    for cond, method in rows:
        model = np.mean(fidelity[cond, method]) if fidelity[cond, method] else None
        model = '' if model is None else ('> 100 (exact)' if model > 100 else f'{model:.1f}')
        cells = ' | '.join(f'{np.mean(gains[(cond, method), r]):+.2f}' for r in args.regs)
        print(f'| {cond} | {method} | {np.mean(inputs[cond]):.2f} | {model} | {cells} |')


if __name__ == '__main__':
    main()
