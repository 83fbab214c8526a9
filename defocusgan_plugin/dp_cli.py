"""All-in-focus image and signed defocus map from dual-pixel (DP) pairs, from the command line (Xin et al., ICCV 2021).

    defocusgan-dp LEFT RIGHT -o OUTDIR [--preset fast|release|none] [--max-radius 25] [--iters N]
    defocusgan-dp FOLDER [FOLDER ...] -o OUTDIR ...
    defocusgan-dp --raw FOLDER -o OUTDIR [--calib LEFT.npy RIGHT.npy --grid 6 8] [--white-sheets LEFT RIGHT]
                  [--crop 1008 1344] [--black-level 1024] [--white-level 16383]

Inputs: two files LEFT RIGHT, or files / folders searched recursively for DP pairs (folders holding l.png + r.png,
files X_left.png + X_right.png; :func:`defocusgan_plugin.utils.dp_pairs.find_dp_pairs`). Each pair is solved by
:class:`defocusgan_plugin.models.dp_joint_optim_model.DPJointOptimModel`, built from the same ``dp_joint`` option
block as the option files:

* 8- or 16-bit PNG views (sRGB-encoded, e.g. Canon DP as DPDD / Sdirt): ``options/test/test_dp_joint.yml``'s block -
  parametric Canon-like DP kernels, optimisation in linear light, the plugin's objective without a preset, the map
  guided-filtered by the all-in-focus image;
* ``--raw``: 16-bit grey raw frames in the Pixel-4 release's layout, preprocessed exactly as
  :class:`defocusgan_plugin.data.dp_raw_dataset.DPRawPixel4Dataset` does (black level, white level, the right view's
  vignetting from the white sheets when ``--white-sheets`` are given, the centre ``--crop``, joint-maximum
  normalisation): ``options/test/test_dp_joint_pixel4.yml``'s block - the ``fast`` preset, linear data, no map filter.

``--calib`` replaces the parametric kernels by calibrated ones: one ``.npy`` array per view, (cells, K, K) on a
``--grid`` of cells measured on a ``--frame-size`` frame (default with ``--raw``: the crop, as the Pixel-4 option
file); views of another size are refused. The reference radius of the calibration is estimated and logged.

Writes per pair NAME (the pair's folder path or file stem): ``NAME_aif.png`` (the all-in-focus image at the input's
bit depth; for ``--raw`` 16-bit in the release's units, value / 65535 = (raw - black) / white), ``NAME_map.npy`` (the
signed defocus map, radius in pixels, float32 H x W) and ``NAME_map.png`` (colour-mapped: blue in front of the focal
plane, white in focus, red behind, for the parametric kernels' sign convention; saturated at ``--map-range``, by
default at the map's own largest |radius|). Every pair is read and checked before the first is solved; errors name the
file or the option and exit with code 2, leaving what was written in place.
"""
import defocusgan_plugin  # noqa: F401  # isort: skip  (before basicsr: installs its torchvision alias; the models)
import argparse
import io
import logging
import numpy as np
import sys
import torch
from basicsr.models import build_model
from basicsr.utils import get_root_logger
from os import path as osp
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from defocusgan_plugin.data.dp_raw_dataset import PIXEL4_CROP, preprocess_raw_pair, read_raw, vignetting_ratio
from defocusgan_plugin.data.dp_synthesis import DEFAULT_PSF
from defocusgan_plugin.models.map_validation_model import diverging_colormap
from defocusgan_plugin.ops.dp_joint import BASE_OPTIONS, PRESETS
from defocusgan_plugin.ops.kernel_bank import load_kernel_array
from defocusgan_plugin.utils.dp_pairs import find_dp_pairs, parse_view_name
from defocusgan_plugin.utils.img_io import atomic_write_bytes, read_image, write_image

# The option files' values (test_dp_joint.yml for sRGB PNGs, test_dp_joint_pixel4.yml for raw frames).
PNG_MAX_RADIUS, RAW_MAX_RADIUS = 25.0, 24.0  # DPDD's largest |CoC|; 1.6 x the Pixel 4's ~13 px calibration
PNG_SEARCH_SCALE = 0.5  # test_dp_joint.yml: range search at half resolution (no preset)
PNG_MAP_FILTER = {'radius': 8, 'eps': 1e-3}
# --real-search: test_dp_maps_sdirt.yml's cue options for real Canon DP captures (768x512 views matched at half
# resolution: 0.125-px radius steps, windows in half-resolution pixels); the step is given in full-resolution pixels
REAL_SEARCH = {'step': 0.25, 'window': 23, 'channel': 'green', 'highpass': 7, 'subpixel': True}
CALIB_TRIM = 1e-3  # test_dp_joint_pixel4.yml: outer kernel rings with <= 0.1 % of the mass dropped
RAW_DEFAULTS = {'black_level': 1024, 'white_level': 2**14 - 1, 'vignetting_box': 101, 'crop': PIXEL4_CROP}


def dp_joint_options(args):
    """The ``dp_joint`` option block of :class:`DPJointOptimModel` for the command line's options: the blocks of
    ``test_dp_joint_pixel4.yml`` (``--raw``) and ``test_dp_joint.yml`` (PNG files) with its overrides."""
    preset = {'auto': 'fast' if args.raw else None, 'none': None}.get(args.preset, args.preset)
    solver = {'preset': preset, 'max_radius': args.max_radius or (RAW_MAX_RADIUS if args.raw else PNG_MAX_RADIUS)}
    if preset is None and not args.raw:
        solver['search_scale'] = PNG_SEARCH_SCALE
    if args.real_search:  # searched at half resolution whatever the preset: REAL_SEARCH's windows are sized for it
        solver.update(search_scale=PNG_SEARCH_SCALE, search=dict(REAL_SEARCH))
    if args.iters:
        levels = PRESETS[preset]['levels'] if preset else BASE_OPTIONS['levels']
        solver['levels'] = [dict(level, iters=min(int(level['iters']), args.iters)) for level in levels]
    if args.calib:
        kernels = {
            'type': 'calibrated',
            'left': args.calib[0],
            'right': args.calib[1],
            'grid': args.grid,
            'frame_size': args.frame_size,
            'trim': CALIB_TRIM
        }
    else:
        kernels = dict(DEFAULT_PSF, type='parametric')  # the synthetic data's Canon-like DP PSF (test_dp_joint.yml)
    return {
        'kernels': kernels,
        'solver': solver,
        'linear_light': not args.raw,
        'radius_range': None,
        'map_filter': None if args.raw else dict(PNG_MAP_FILTER)
    }


def check_calibration(args):
    """Reads the ``--calib`` arrays once for errors worded for the command line (file, shape, ``--grid``)."""
    arrays = [load_kernel_array(path, '--calib') for path in args.calib]
    if arrays[0].shape != arrays[1].shape:
        raise ValueError(f'--calib: the kernel files differ in shape: {arrays[0].shape} in {args.calib[0]}, '
                         f'{arrays[1].shape} in {args.calib[1]}.')
    cells = int(np.prod(arrays[0].shape[:-2]))
    if args.grid is None and cells > 1:
        raise ValueError(f'--calib: {args.calib[0]} holds {cells} kernels per view; give their grid with --grid ROWS '
                         'COLS (6 8 for the Pixel 4).')
    if args.grid is not None and args.grid[0] * args.grid[1] != cells:
        raise ValueError(f'--calib: {args.calib[0]} holds {cells} kernels per view, but --grid {args.grid[0]} '
                         f'{args.grid[1]} has {args.grid[0] * args.grid[1]} cells.')


class PairReader:
    """Reads DP pairs as the model's inputs: PNG views as they are, raw frames preprocessed as
    :class:`DPRawPixel4Dataset` does."""

    def __init__(self, args):
        self.raw, self.args = args.raw, args
        self.vignetting = None
        if args.raw and args.white_sheets:
            self.vignetting = vignetting_ratio(*args.white_sheets, args.black_level, args.white_level,
                                               args.vignetting_box, 'white sheet (--white-sheets)')

    def __call__(self, pair):
        """(left, right) (1, C, H, W) float32 tensors, the raw normalisation factor (None for PNG files) and the bit
        depth of the output."""
        if self.raw:
            args = self.args
            views = [read_raw(path, args.black_level, args.white_level) for path in pair[1:]]
            where = f'of {pair.left} and {pair.right}'
            left, right, scale, _ = preprocess_raw_pair(*views, self.vignetting, args.crop, 'joint_max', where,
                                                        '--crop')
            return torch.from_numpy(left)[None, None], torch.from_numpy(right)[None, None], scale, 16
        (left, depth), (right, depth_r) = (read_image(path, channels=None) for path in pair[1:])
        if left.shape != right.shape:
            raise ValueError(f'The views of pair {pair.name} differ in size: {left.shape[0]}x{left.shape[1]}x'
                             f'{left.shape[2]} in {pair.left}, {right.shape[0]}x{right.shape[1]}x{right.shape[2]} in '
                             f'{pair.right}.')
        if depth != depth_r:
            raise ValueError(f'The views of pair {pair.name} differ in bit depth: {depth} in {pair.left}, {depth_r} '
                             f'in {pair.right}.')
        # BGR as read: the kernels and the objective treat the channels alike, so no reordering is needed
        left, right = (torch.from_numpy(v.transpose(2, 0, 1).copy())[None] for v in (left, right))
        return left, right, None, depth if depth in (8, 16) else 16


def check_pairs(pairs, reader, frame_size, calib):
    """Reads every pair once before anything is solved: unreadable files and size mismatches fail early."""
    for pair in tqdm(pairs, desc='Checking', unit='pair', leave=False):
        left = reader(pair)[0]
        size = tuple(left.shape[-2:])
        if frame_size is not None and size != tuple(frame_size):
            raise ValueError(f'The views of pair {pair.name} ({pair.left}) are {size[0]}x{size[1]} after '
                             f'preprocessing, but the calibration ({calib[0]}, {calib[1]}) was measured on a '
                             f'{frame_size[0]}x{frame_size[1]} frame (--frame-size, default the --crop); crop the '
                             'views to it or fix --frame-size.')


class SolverProgress:
    """The model's solver, reporting its iterations to a progress bar through ``DPJointSolver``'s ``callback``."""

    def __init__(self, solver, name):
        self.solver, self.name, self.bar, self.levels = solver, name, None, None

    def __getattr__(self, attr):  # preset, max_radius, describe(): the wrapped solver's
        return getattr(self.solver, attr)

    def __call__(self, left, right, radius_range=None, callback=None):
        self.levels = None
        with tqdm(desc=f'  {self.name}', unit='it', leave=False) as self.bar:
            return self.solver(left, right, radius_range, callback=self._step)

    def _step(self, state):
        if self.levels is None:  # the schedule depends on the layer range, known once the solver starts
            self.levels = self.solver.schedule(float(state['radii'].abs().max()))
            self.bar.reset(total=sum(level['iters'] for level in self.levels))
        level = self.levels[state['level']]
        # early stopping ends a level before its last iteration: the bar jumps to the next one
        done = sum(lv['iters'] for lv in self.levels[:state['level']]) + state['iteration']
        self.bar.set_postfix_str(f"level {state['level'] + 1}/{len(self.levels)} (scale {level['scale']:g})", False)
        self.bar.update(done - self.bar.n)


def write_npy(path, array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic_write_bytes(path, buffer.getvalue())


def solve_pair(model, pair, reader, out_dir, map_range):
    """Solves one pair and writes its three outputs (the colour map saturated at ``map_range``, None: at the map's
    own largest |radius|); returns their paths."""
    left, right, scale, depth = reader(pair)
    data = {'lq_l': left, 'lq_r': right}
    if scale is not None:  # raw data: the model multiplies the all-in-focus image back to the raw units
        data['norm_scale'] = torch.tensor([scale], dtype=torch.float32)
    model.solver.name = pair.name
    model.feed_data(data)
    model.test()
    aif = model.aif[0].cpu().numpy().transpose(1, 2, 0)
    defocus = model.output[0, 0].cpu().numpy().astype(np.float32)
    paths = [osp.join(out_dir, f'{pair.name}{suffix}') for suffix in ('_aif.png', '_map.npy', '_map.png')]
    write_image(paths[0], aif[..., 0] if aif.shape[2] == 1 else aif, depth)
    write_npy(paths[1], defocus)
    limit = map_range or max(float(np.abs(defocus).max()), 1e-3)
    write_image(paths[2], diverging_colormap(defocus, limit) / 255.0, 8)  # uint8 / 255 re-quantises exactly
    return paths


def build_solver_model(args, device):
    """DPJointOptimModel from the command line's ``dp_joint`` block (as ``basicsr/test.py`` builds it)."""
    opt = {
        'name': 'defocusgan-dp',
        'model_type': 'DPJointOptimModel',
        'is_train': False,
        'dist': False,
        'num_gpu': 1 if device.type == 'cuda' else 0,
        'path': {},
        'dp_joint': dp_joint_options(args)
    }
    model = build_model(opt)
    model.solver = SolverProgress(model.solver, '')
    return model


def _size(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f'expected a size >= 0, got {text}')
    return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog='defocusgan-dp', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('inputs', nargs='+', metavar='INPUT', help='LEFT RIGHT files, or files / folders of DP pairs')
    parser.add_argument('-o', '--output', required=True, metavar='OUTDIR', help='output folder')
    parser.add_argument(
        '--preset',
        choices=('auto', 'none', 'fast', 'release'),
        default='auto',
        help="solver preset (default auto: fast with --raw, none (the plugin's objective) for PNG files)")
    parser.add_argument(
        '--max-radius',
        type=float,
        help=f'largest |radius| searched, pixels (default {PNG_MAX_RADIUS:g}; --raw '
        f'{RAW_MAX_RADIUS:g})')
    parser.add_argument(
        '--iters',
        type=int,
        help="caps every level of the preset's schedule at this many iterations, for a quick look (a coarse level "
        'skipped for its small blur still hands its share to the next)')
    parser.add_argument(
        '--real-search',
        action='store_true',
        help='match the views for the layer range and the start as real Canon DP captures need: green channel, '
        'a high-pass against the views\' gain differences, sub-pixel radii (PNG views; see README, Sdirt)')
    parser.add_argument(
        '--map-range',
        type=float,
        help="|radius| drawn saturated in NAME_map.png (default: each map's largest |radius|; "
        'give one for colours comparable across pairs)')
    calib = parser.add_argument_group('calibrated kernels')
    calib.add_argument('--calib', nargs=2, metavar=('LEFT.npy', 'RIGHT.npy'), help='per-view kernel arrays')
    calib.add_argument('--grid', nargs=2, type=int, metavar=('ROWS', 'COLS'), help='cells of the calibration')
    calib.add_argument(
        '--frame-size',
        nargs=2,
        type=int,
        metavar=('H', 'W'),
        help='frame the grid was measured on (default with '
        '--raw: the crop; else the grid is spread over each image)')
    raw = parser.add_argument_group('raw frames (Pixel-4 release layout)')
    raw.add_argument('--raw', action='store_true', help='16-bit grey raw DP frames, preprocessed as the release')
    raw.add_argument('--black-level', type=int, help=f"default {RAW_DEFAULTS['black_level']}")
    raw.add_argument('--white-level', type=float, help=f"default {RAW_DEFAULTS['white_level']}")
    raw.add_argument(
        '--white-sheets',
        nargs=2,
        metavar=('LEFT', 'RIGHT'),
        help='vignetting correction of the right '
        'view (default: none)')
    raw.add_argument(
        '--vignetting-box',
        type=int,
        help=f"box of the white-sheet ratio (default "
        f"{RAW_DEFAULTS['vignetting_box']})")
    raw.add_argument(
        '--crop',
        nargs=2,
        type=_size,
        metavar=('H', 'W'),
        help='centre crop (default 1008 1344; 0 0: '
        'the whole frame)')
    parser.add_argument('--threads', type=int, help='CPU threads of torch (default: torch\'s)')
    parser.add_argument('--device', default='auto', help="'auto' (GPU if present), 'cpu', 'cuda', 'cuda:1', ...")
    args = parser.parse_args(argv)
    given = [f"--{k.replace('_', '-')}" for k in RAW_DEFAULTS if getattr(args, k) is not None]
    if args.white_sheets:
        given.append('--white-sheets')
    if given and not args.raw:
        parser.error(f"{', '.join(given)} apply to raw frames only (add --raw)")
    for key, value in RAW_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.crop = None if args.crop is None or not all(args.crop) else tuple(args.crop)
    if args.vignetting_box < 1 or args.vignetting_box % 2 != 1:
        parser.error(f'--vignetting-box must be a positive odd size, got {args.vignetting_box}')
    if args.white_level <= 0:
        parser.error(f'--white-level must be positive, got {args.white_level:g}')
    if (args.grid or args.frame_size) and not args.calib:
        parser.error('--grid and --frame-size describe a calibration: add --calib LEFT.npy RIGHT.npy')
    if args.calib and args.frame_size is None and args.raw:
        args.frame_size = args.crop
    if args.real_search and args.raw:
        parser.error('--real-search matches RGB PNG views (its green channel); raw frames are grey')
    if args.iters is not None and args.iters < 1:
        parser.error(f'--iters must be >= 1, got {args.iters}')
    return parser, args


def main(argv=None):
    parser, args = parse_args(argv)
    device = torch.device(('cuda' if torch.cuda.is_available() else 'cpu') if args.device == 'auto' else args.device)
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            parser.exit(2, f'defocusgan-dp: error: --device {args.device}: no CUDA device here; use --device cpu.\n')
        if device.index is not None:
            torch.cuda.set_device(device)  # the model places itself on the current device
    if args.threads:
        torch.set_num_threads(args.threads)
    logger = get_root_logger()
    logger.setLevel(logging.INFO)  # the model's lines: the calibration's radius; per pair, seconds and layer range
    written = 0
    try:
        pairs = find_dp_pairs(args.inputs)
        # the release layout's white sheets are a DP pair too, but calibration data, not a scene
        pairs = [p for p in pairs if (parse_view_name(p.left) or ('', ''))[1].lower() != 'white_sheet']
        if not pairs:
            raise FileNotFoundError(f'No DP pairs to process in {" ".join(args.inputs)} (only white sheets).')
        if args.calib:
            check_calibration(args)
        reader = PairReader(args)
        check_pairs(pairs, reader, args.frame_size if args.calib else None, args.calib)
        with logging_redirect_tqdm(loggers=[logger]):
            model = build_solver_model(args, device)
            for pair in tqdm(pairs, desc='DP pairs', unit='pair'):
                solve_pair(model, pair, reader, args.output, args.map_range)
                written += 1
    except (FileNotFoundError, ValueError, PermissionError) as err:
        parser.exit(2, f'defocusgan-dp: error: {err}\n')
    print(f'Wrote {written} pair(s) to {args.output} (NAME_aif.png, NAME_map.npy, NAME_map.png)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
