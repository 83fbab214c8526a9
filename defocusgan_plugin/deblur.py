"""Single-image defocus deblurring from the command line.

    defocusgan-deblur INPUT [INPUT ...] -o OUTDIR --weights net_g.pth [--tile 512 --tile-overlap 64] [--half]

INPUT: image files or folders (searched recursively; PNG, JPEG, TIFF, BMP). Each result is written to OUTDIR under
the same name (relative to its input folder), at the bit depth of its input (8-bit in -> 8-bit out, 16-bit in ->
16-bit out; gray stays gray). The generator is DefocusGANGenerator with its defaults unless ``--opt`` names an
option file whose ``network_g`` block describes it (e.g. the training file). Weights are loaded with
``torch.load(weights_only=True)``: ``params_ema`` when the file has it, else ``params`` (``--param-key`` to choose).

Large images can be processed in tiles (``--tile``): tiles overlap by ``--tile-overlap`` pixels and are blended with
linear ramps across the middle of the overlaps, so no seam is visible (tiled vs whole image: > 45 dB PSNR). Runs on
the GPU when there is one (``--device``).
"""
import argparse
import os
import sys
import torch
from collections import OrderedDict
from os import path as osp

from defocusgan_plugin._startup import install_torchvision_alias

install_torchvision_alias()

import defocusgan_plugin  # noqa: E402,F401  (registers the archs)
from basicsr.archs import build_network  # noqa: E402
from basicsr.utils.registry import ARCH_REGISTRY  # noqa: E402
from tqdm import tqdm  # noqa: E402

from defocusgan_plugin.models.dp_base_model import state_dict_mismatches  # noqa: E402
from defocusgan_plugin.utils.checkpoint import load_checkpoint  # noqa: E402
from defocusgan_plugin.utils.img_io import is_image_file, read_image, write_image  # noqa: E402
from defocusgan_plugin.utils.options import read_yaml  # noqa: E402
from defocusgan_plugin.utils.registry_util import unknown_type_message  # noqa: E402


def build_generator(weights, opt_file=None, param_key=None, device='cpu'):
    """Builds the generator and loads its weights strictly.

    Args:
        weights (str): Checkpoint (BasicSR format ``{'params': ...}`` or a plain state dict).
        opt_file (str | None): Option file whose ``network_g`` block describes the network. Default:
            DefocusGANGenerator with its default arguments.
        param_key (str | None): Key inside the checkpoint. Default: 'params_ema' if present, else 'params'.
        device (str | torch.device): Device.

    Returns:
        nn.Module: The generator in eval mode.
    """
    net_opt = {'type': 'DefocusGANGenerator'}
    if opt_file:
        net_opt = read_yaml(opt_file).get('network_g')
        if not isinstance(net_opt, dict) or 'type' not in net_opt:
            raise KeyError(f'{opt_file} has no network_g block with a type.')
        if net_opt['type'] not in ARCH_REGISTRY:
            raise KeyError(f'{opt_file}: ' + unknown_type_message('network_g', net_opt['type'], ARCH_REGISTRY))
    net = build_network(dict(net_opt))
    state = load_checkpoint(weights)
    if isinstance(state, dict) and not all(torch.is_tensor(v) for v in state.values()):
        key = param_key or ('params_ema' if 'params_ema' in state else 'params')
        if key not in state:
            raise KeyError(f'{weights} has no {key!r} entry (it has: {", ".join(map(str, state))}); use --param-key.')
        state = state[key]
    state = OrderedDict((k[7:] if k.startswith('module.') else k, v) for k, v in state.items())
    problems = state_dict_mismatches(net.state_dict(), state)
    if problems:
        built = f'network_g of {opt_file}' if opt_file else 'its default arguments (pass --opt <training options>)'
        raise ValueError(f'{weights} does not match {net_opt["type"]} built from {built}: ' + '; '.join(problems))
    net.load_state_dict(state)
    return net.eval().to(device)


def _tile_starts(size, tile, stride, align=1):
    """Starts of tiles covering ``[0, size)``, all multiples of ``align``; the last tile runs to the end (it may be
    up to ``align - 1`` pixels longer than ``tile``)."""
    if size <= tile:
        return [0]
    last = (size - tile) // align * align
    return sorted(set(range(0, last, stride)) | {last})


def _ramp_window(length, overlap, ramp_start, ramp_end):
    """1-D blending weights of a tile: at an inner edge, 0 over the outer quarter of the overlap (those pixels saw
    the least context), a linear ramp over its middle half, 1 elsewhere. Two tiles sharing an overlap sum to 1."""
    weights = torch.ones(length)
    n = min(overlap, length)
    margin = n // 4
    inner = n - 2 * margin
    ramp = torch.cat([torch.zeros(margin), torch.arange(1, inner + 1, dtype=torch.float32) / (inner + 1),
                      torch.ones(margin)])  # ramp + ramp.flip(0) = 1
    if ramp_start and n:
        weights[:n] = ramp
    if ramp_end and n:
        weights[-n:] = torch.minimum(weights[-n:], ramp.flip(0))
    return weights


def deblur_tensor(net, img, tile=0, overlap=64, autocast_dtype=None):
    """Runs the generator on a (1, C, H, W) image, whole or in blended overlapping tiles.

    Args:
        net (nn.Module): Generator (map-free forward).
        img (Tensor): (1, C, H, W) image in [0, 1] on the network's device.
        tile (int): Tile size in pixels; 0 processes the whole image.
        overlap (int): Overlap between neighbouring tiles in pixels (< tile).
        autocast_dtype (torch.dtype | None): Mixed precision for the forward pass (CUDA).

    Returns:
        Tensor: (1, C_out, H, W) result on the CPU, float32.
    """
    def run(x):
        with torch.no_grad(), torch.autocast(x.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            return net(x).float().cpu()

    _, _, h, w = img.shape
    if tile <= 0 or (h <= tile and w <= tile):
        return run(img)
    if not 0 <= overlap < tile:
        raise ValueError(f'--tile-overlap must be >= 0 and smaller than --tile ({tile}), got {overlap}.')
    # Tiles start on the network's padding grid: a fully convolutional net padded to a multiple m is invariant to
    # shifts by m only, so off-grid tiles would differ from the whole-image result far from any seam.
    align = getattr(net, 'pad_multiple', 1)
    stride = (tile - overlap) // align * align
    if stride <= 0:
        raise ValueError(f'--tile {tile} with --tile-overlap {overlap} leaves no step on the network\'s {align}-pixel '
                         f'grid; use --tile >= --tile-overlap + {align}.')
    tops, lefts = _tile_starts(h, tile, stride, align), _tile_starts(w, tile, stride, align)
    out, total = None, torch.zeros(1, 1, h, w)
    for top in tops:
        for left in lefts:
            bottom = h if top == tops[-1] else top + tile
            right = w if left == lefts[-1] else left + tile
            piece = run(img[..., top:bottom, left:right])
            th, tw = piece.shape[-2:]
            wy = _ramp_window(th, overlap, top > 0, top + th < h)
            wx = _ramp_window(tw, overlap, left > 0, left + tw < w)
            weight = (wy[:, None] * wx[None, :])[None, None]
            if out is None:
                out = torch.zeros(1, piece.shape[1], h, w)
            out[..., top:top + th, left:left + tw] += piece * weight
            total[..., top:top + th, left:left + tw] += weight
    return out / total


def collect_inputs(inputs, out_dir):
    """Pairs every input image with its output path; errors for missing inputs, clashes and overwriting inputs."""
    pairs = []
    for item in inputs:
        if osp.isdir(item):
            found = []
            for root, _, files in os.walk(item):
                found += [osp.join(root, f) for f in files if is_image_file(f)]
            if not found:
                raise FileNotFoundError(f'Input folder contains no images: {item}')
            pairs += [(f, osp.join(out_dir, osp.relpath(f, item))) for f in sorted(found)]
        elif osp.isfile(item):
            if not is_image_file(item):
                raise ValueError(f'Not an image file (PNG, JPEG, TIFF, BMP): {item}')
            pairs.append((item, osp.join(out_dir, osp.basename(item))))
        else:
            raise FileNotFoundError(f'Input not found: {item}')
    sources = {osp.realpath(src) for src, _ in pairs}
    seen = {}
    for src, dst in pairs:
        real = osp.realpath(dst)
        if real in sources:
            raise ValueError(f'The output for {src} would overwrite an input file ({dst}); choose another -o folder.')
        if real in seen:
            raise ValueError(f'{seen[real]} and {src} would both be written to {dst}; process them separately.')
        seen[real] = src
    return pairs


def deblur_file(net, src, dst, device, tile=0, overlap=64, autocast_dtype=None):
    """Deblurs one image file and writes the result at the input's bit depth (gray stays gray)."""
    img, bit_depth = read_image(src, channels=None)
    gray = img.shape[2] == 1
    rgb = img.repeat(3, axis=2) if gray else img[..., ::-1]  # BGR file order -> RGB network order
    x = torch.from_numpy(rgb.transpose(2, 0, 1).copy())[None].to(device)
    out = deblur_tensor(net, x, tile, overlap, autocast_dtype)[0].clamp_(0, 1).numpy().transpose(1, 2, 0)
    out = out.mean(axis=2) if gray else out[..., ::-1]
    write_image(dst, out, bit_depth if bit_depth in (8, 16) else 16)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog='defocusgan-deblur', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('inputs', nargs='+', metavar='INPUT', help='image files or folders')
    parser.add_argument('-o', '--output', required=True, metavar='OUTDIR', help='output folder')
    parser.add_argument('--weights', required=True, help='generator checkpoint (e.g. net_g_latest.pth)')
    parser.add_argument('--opt', help='option file with the network_g block (default: DefocusGANGenerator defaults)')
    parser.add_argument('--param-key', help="checkpoint key (default: 'params_ema' if present, else 'params')")
    parser.add_argument('--tile', type=int, default=0, help='tile size in pixels (default 0: whole image)')
    parser.add_argument('--tile-overlap', type=int, default=64, help='overlap between tiles in pixels (default 64)')
    parser.add_argument('--half', action='store_true', help='fp16 autocast (CUDA only)')
    parser.add_argument('--device', default='auto', help="'auto' (GPU if present), 'cpu', 'cuda', 'cuda:1', ...")
    return parser, parser.parse_args(argv)


def main(argv=None):
    parser, args = parse_args(argv)
    device = torch.device(('cuda' if torch.cuda.is_available() else 'cpu') if args.device == 'auto' else args.device)
    autocast_dtype = None
    if args.half:
        if device.type == 'cuda':
            autocast_dtype = torch.float16
        else:
            print('defocusgan-deblur: --half needs a CUDA device; running in fp32 on the CPU.', file=sys.stderr)
    try:
        pairs = collect_inputs(args.inputs, args.output)
        net = build_generator(args.weights, args.opt, args.param_key, device)
        for src, dst in tqdm(pairs, unit='image', desc='Deblurring'):
            deblur_file(net, src, dst, device, args.tile, args.tile_overlap, autocast_dtype)
    except (FileNotFoundError, KeyError, ValueError, PermissionError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        parser.exit(2, f'defocusgan-deblur: error: {message}\n')
    print(f'Wrote {len(pairs)} image(s) to {args.output}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
