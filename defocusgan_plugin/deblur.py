"""Single-image defocus deblurring from the command line.

    defocusgan-deblur INPUT [INPUT ...] -o OUTDIR --weights net_g.pth [--tile 512|auto --tile-overlap 64] [--half]
                      [--compile]

INPUT: image files or folders (searched recursively; PNG, JPEG, TIFF, BMP). Each result is written to OUTDIR under
the same name (relative to its input folder), at the bit depth of its input (8-bit in -> 8-bit out, 16-bit in ->
16-bit out; gray stays gray).

The generator: the ``network_g`` block of ``--opt`` (e.g. the training option file) when given; otherwise
DefocusGANReleaseGenerator when the checkpoint holds the authors' release weights (their ``90_models.pth``,
``{'state_dict': ...}``), else DefocusGANGenerator with its defaults. Weights are loaded with
``torch.load(weights_only=True)`` from the first of ``params_ema``, ``params``, ``state_dict`` in the file
(``--param-key`` to choose) and must match the network exactly.

Large images can be processed in tiles (``--tile``): tiles overlap by ``--tile-overlap`` pixels and are blended with
linear ramps across the middle of the overlaps, so no seam is visible (tiled vs whole image: > 45 dB PSNR). ``--tile
auto`` picks the size: on a GPU the whole image when its measured forward memory fits in 70 % of the free GPU
memory, else the largest square tile that does; on the CPU the whole image up to 1024 px per side, else 1024-px tiles.
Runs on the GPU when there is one (``--device``); ``--half`` uses bf16 autocast where the GPU supports it (fp16
otherwise), ``--compile`` runs the generator through ``torch.compile``.
"""
import defocusgan_plugin  # noqa: F401  # isort: skip  (before basicsr: installs its torchvision alias; the archs)
import argparse
import math
import os
import sys
import torch
from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY
from os import path as osp
from tqdm import tqdm

from defocusgan_plugin.utils.checkpoint import load_state_dict_from, state_dict_mismatches
from defocusgan_plugin.utils.img_io import is_image_file, read_image, write_image
from defocusgan_plugin.utils.options import read_yaml
from defocusgan_plugin.utils.registry_util import unknown_type_message

# Names every state dict of the DefocusGAN release networks has (generator: 3-channel head, map network: 6).
RELEASE_KEYS = ('head.0.weight', 'tail_hard.0.weight', 'layer1.0.0.weight')
CPU_AUTO_TILE = 1024  # --tile auto on the CPU: time, not memory, is the limit there
AUTO_TILE_BUDGET = 0.7  # --tile auto on a GPU: share of the free memory a tile may use


def release_network_type(state):
    """The registered type of a DefocusGAN release state dict ('DefocusGANReleaseGenerator' or
    'DefocusMapReleaseNet'), or None when ``state`` is not one."""
    if not all(k in state for k in RELEASE_KEYS) or state['head.0.weight'].dim() != 4:
        return None
    return 'DefocusGANReleaseGenerator' if state['head.0.weight'].shape[1] == 3 else 'DefocusMapReleaseNet'


def build_generator(weights, opt_file=None, param_key=None, device='cpu'):
    """Builds the generator and loads its weights strictly.

    Args:
        weights (str): Checkpoint: BasicSR's ``{'params': ...}``, the release's ``{'state_dict': ...}`` or a plain
            state dict.
        opt_file (str | None): Option file whose ``network_g`` block describes the network. Default:
            DefocusGANReleaseGenerator for release weights, else DefocusGANGenerator with its default arguments.
        param_key (str | None): Key inside the checkpoint. Default: the first of 'params_ema', 'params',
            'state_dict' present.
        device (str | torch.device): Device.

    Returns:
        nn.Module: The generator in eval mode.
    """
    try:
        state, _ = load_state_dict_from(weights, param_key, fallback=False)
    except KeyError as err:
        raise KeyError(f'{err.args[0]} Use --param-key.') from None
    if opt_file:
        net_opt = read_yaml(opt_file).get('network_g')
        if not isinstance(net_opt, dict) or 'type' not in net_opt:
            raise KeyError(f'{opt_file} has no network_g block with a type.')
        if net_opt['type'] not in ARCH_REGISTRY:
            raise KeyError(f'{opt_file}: ' + unknown_type_message('network_g', net_opt['type'], ARCH_REGISTRY))
        built = f'network_g of {opt_file}'
    else:
        release = release_network_type(state)
        if release == 'DefocusMapReleaseNet':
            raise ValueError(f'{weights} holds the DefocusGAN release\'s defocus-map network (6-channel input), not '
                             'a deblurring generator.')
        net_opt = {'type': release or 'DefocusGANGenerator'}
        built = 'the release layout' if release else 'its default arguments (pass --opt <training options>)'
    net = build_network(dict(net_opt))
    problems = state_dict_mismatches(net.state_dict(), state)
    if problems:
        raise ValueError(f'{weights} does not match {net_opt["type"]} built from {built}: ' + '; '.join(problems))
    net.load_state_dict(state)
    return net.eval().to(device)


class CompileError(RuntimeError):
    """``--compile`` failed (torch.compile compiles at the first forward pass)."""


class CompiledGenerator:
    """``torch.compile`` of a generator that keeps its ``pad_multiple`` and turns a failing compilation (at the first
    call) into a :class:`CompileError` naming the flag."""

    def __init__(self, net):
        self.pad_multiple = getattr(net, 'pad_multiple', 1)
        self.compiled = torch.compile(net)
        self.checked = False

    def __call__(self, x):
        if self.checked:
            return self.compiled(x)
        try:
            out = self.compiled(x)
        except Exception as err:  # backend, compiler or tracing failures all surface here
            first = (str(err).strip().splitlines() or [''])[0][:300]
            raise CompileError(f'--compile: torch.compile failed on the first forward pass ({type(err).__name__}: '
                               f'{first}); run without --compile.') from err
        self.checked = True
        return out


def forward_bytes_per_pixel(net, device, autocast_dtype=None, probe=256):
    """Peak CUDA memory of one forward pass per input pixel, measured on a ``probe`` x ``probe`` input."""
    x = torch.rand(1, 3, probe, probe, device=device)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    with torch.no_grad(), torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        net(x)
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / probe**2


def auto_tile_size(height, width, bytes_per_pixel, free_bytes, align=1, overlap=64, budget=AUTO_TILE_BUDGET):
    """Tile size for ``--tile auto`` on a GPU.

    Args:
        height, width (int): Image size.
        bytes_per_pixel (float): Forward-pass memory per input pixel (:func:`forward_bytes_per_pixel`).
        free_bytes (int): Free device memory.
        align (int): Tiles are multiples of it (the generator's ``pad_multiple``).
        overlap (int): Tile overlap; a tile must be at least ``overlap + align``.
        budget (float): Share of ``free_bytes`` a forward pass may use.

    Returns:
        int: 0 (whole image) when it fits, else the largest square tile that does, a multiple of ``align``.
    """
    usable = budget * free_bytes
    if height * width * bytes_per_pixel <= usable:
        return 0
    side = int(math.sqrt(usable / bytes_per_pixel)) // align * align
    if side < overlap + align:
        raise ValueError(f'--tile auto: {free_bytes / 2**30:.2f} GiB of free GPU memory allow tiles of {side} px '
                         f'only, less than --tile-overlap {overlap} + {align}; free GPU memory, lower --tile-overlap '
                         'or run on the CPU (--device cpu).')
    return side


class AutoTiler:
    """``--tile auto``: per image, the tile size from :func:`auto_tile_size` (GPU) or the CPU default."""

    def __init__(self, net, device, overlap, autocast_dtype=None):
        self.net, self.device, self.overlap, self.autocast_dtype = net, device, overlap, autocast_dtype
        self.align = getattr(net, 'pad_multiple', 1)
        self.bytes_per_pixel = None

    def __call__(self, height, width):
        if self.device.type != 'cuda':
            return 0 if max(height, width) <= CPU_AUTO_TILE else CPU_AUTO_TILE
        if self.bytes_per_pixel is None:  # measured once, on the uncompiled network
            self.bytes_per_pixel = forward_bytes_per_pixel(self.net, self.device, self.autocast_dtype)
        free, _ = torch.cuda.mem_get_info(self.device)
        return auto_tile_size(height, width, self.bytes_per_pixel, free, self.align, self.overlap)


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
    ramp = torch.cat(
        [torch.zeros(margin),
         torch.arange(1, inner + 1, dtype=torch.float32) / (inner + 1),
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
    """Deblurs one image file and writes the result at the input's bit depth (gray stays gray).

    ``tile`` is a size in pixels (0: whole image) or a callable ``(height, width) -> size`` (``--tile auto``).
    """
    img, bit_depth = read_image(src, channels=None)
    gray = img.shape[2] == 1
    rgb = img.repeat(3, axis=2) if gray else img[..., ::-1]  # BGR file order -> RGB network order
    x = torch.from_numpy(rgb.transpose(2, 0, 1).copy())[None].to(device)
    if callable(tile):
        tile = tile(*x.shape[-2:])
    out = deblur_tensor(net, x, tile, overlap, autocast_dtype)[0].clamp_(0, 1).numpy().transpose(1, 2, 0)
    out = out.mean(axis=2) if gray else out[..., ::-1]
    write_image(dst, out, bit_depth if bit_depth in (8, 16) else 16)


def half_dtype(device):
    """Autocast dtype of ``--half``: bf16 on GPUs that support it, fp16 on older ones, None (fp32) off CUDA."""
    if device.type != 'cuda':
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _tile_arg(value):
    if value == 'auto':
        return value
    try:
        size = int(value)
    except ValueError:
        size = -1
    if size < 0:
        raise argparse.ArgumentTypeError(f"expected a size in pixels (0: whole image) or 'auto', got {value!r}")
    return size


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog='defocusgan-deblur', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('inputs', nargs='+', metavar='INPUT', help='image files or folders')
    parser.add_argument('-o', '--output', required=True, metavar='OUTDIR', help='output folder')
    parser.add_argument(
        '--weights', required=True, help='generator checkpoint (net_g_latest.pth, or the release\'s '
        '90_models.pth)')
    parser.add_argument(
        '--opt',
        help='option file with the network_g block (default: DefocusGANReleaseGenerator for '
        'release weights, else DefocusGANGenerator defaults)')
    parser.add_argument(
        '--param-key', help="checkpoint key (default: the first of 'params_ema', 'params', "
        "'state_dict' present)")
    parser.add_argument(
        '--tile', type=_tile_arg, default=0, help="tile size in pixels, or 'auto' (default 0: whole "
        'image)')
    parser.add_argument('--tile-overlap', type=int, default=64, help='overlap between tiles in pixels (default 64)')
    parser.add_argument('--half', action='store_true', help='bf16 autocast, fp16 where the GPU lacks bf16 (CUDA only)')
    parser.add_argument('--compile', action='store_true', help='run the generator through torch.compile')
    parser.add_argument('--device', default='auto', help="'auto' (GPU if present), 'cpu', 'cuda', 'cuda:1', ...")
    return parser, parser.parse_args(argv)


def main(argv=None):
    parser, args = parse_args(argv)
    device = torch.device(('cuda' if torch.cuda.is_available() else 'cpu') if args.device == 'auto' else args.device)
    autocast_dtype = half_dtype(device) if args.half else None
    if args.half and autocast_dtype is None:
        print('defocusgan-deblur: --half needs a CUDA device; running in fp32 on the CPU.', file=sys.stderr)
    try:
        pairs = collect_inputs(args.inputs, args.output)
        net = build_generator(args.weights, args.opt, args.param_key, device)
        tile = AutoTiler(net, device, args.tile_overlap, autocast_dtype) if args.tile == 'auto' else args.tile
        if args.compile:
            net = CompiledGenerator(net)
        for src, dst in tqdm(pairs, unit='image', desc='Deblurring'):
            deblur_file(net, src, dst, device, tile, args.tile_overlap, autocast_dtype)
    except (FileNotFoundError, KeyError, ValueError, PermissionError, CompileError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        parser.exit(2, f'defocusgan-deblur: error: {message}\n')
    print(f'Wrote {len(pairs)} image(s) to {args.output}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
