import inspect
import torch
from basicsr.archs import build_network
from basicsr.metrics import calculate_metric
from basicsr.utils import get_root_logger, imwrite
from basicsr.utils.registry import MODEL_REGISTRY
from collections import OrderedDict
from os import path as osp

from defocusgan_plugin.metrics.defocus_map_metric import DEFOCUS_MAP_METRICS
from defocusgan_plugin.metrics.protocol import MetricImages
from defocusgan_plugin.models.map_validation_model import MapValidationModel, diverging_colormap
from defocusgan_plugin.ops.dp_joint import DPJointSolver
from defocusgan_plugin.ops.filters import guided_filter, guided_filter_options
from defocusgan_plugin.ops.kernel_bank import ParametricKernelBank, ResampledKernelBank
from defocusgan_plugin.ops.render import linear_to_srgb, srgb_to_linear
from defocusgan_plugin.utils.img_io import write_image

SOLVER_KEYS = tuple(p for p in inspect.signature(DPJointSolver).parameters if p != 'bank')
OPTION_KEYS = ('kernels', 'solver', 'linear_light', 'radius_range', 'map_filter')


def build_kernel_bank(opt, model):
    """Kernel bank from the ``dp_joint.kernels`` option block.

    * ``type: parametric`` (default): :func:`defocusgan_plugin.ops.psf.dp_psf` with the block's ``profile``,
      ``ramp_width``, ``order``, ``cutoff``, ``beta``, ``sigma``.
    * ``type: calibrated``: ``left`` / ``right`` ``.npy`` files, optional ``grid``, ``frame_size`` (the crop the grid
      belongs to: views of another size are refused), ``radii`` or ``radius`` (overrides of the reference radius,
      otherwise estimated and logged), ``max_size``, ``trim``, ``supersample``
      (:meth:`defocusgan_plugin.ops.kernel_bank.ResampledKernelBank.from_npy`).
    * ``type: learned``: the stage-1 kernels of the top-level ``network_kernel`` block (e.g. ``LearnableBlurKernel``)
      loaded from ``path.pretrain_network_kernel``.
    """
    opt = dict(opt or {})
    kind = opt.pop('type', 'parametric')
    if kind == 'parametric':
        opt.setdefault('profile', 'butterworth')
        return ParametricKernelBank(**opt)
    if kind == 'calibrated':
        known = {'left', 'right', 'grid', 'frame_size', 'radii', 'radius', 'max_size', 'trim', 'supersample'}
        if set(opt) - known or 'left' not in opt or 'right' not in opt:
            raise ValueError('dp_joint.kernels (type: calibrated) needs left and right .npy files and accepts grid, '
                             f'frame_size, radii, radius, max_size, trim, supersample; got {sorted(opt)}.')
        bank = ResampledKernelBank.from_npy(**opt, option='dp_joint.kernels')
        how = 'given (dp_joint.kernels.radius/radii)' if opt.get('radius') or opt.get('radii') else 'estimated'
        get_root_logger().info(f'Calibrated DP kernels ({opt["left"]}, {opt["right"]}): {bank.describe()} [{how}].')
        return bank
    if kind == 'learned':
        if 'network_kernel' not in model.opt or not model.opt['path'].get('pretrain_network_kernel'):
            raise ValueError('dp_joint.kernels type: learned needs a network_kernel block (e.g. type: '
                             'LearnableBlurKernel) and path.pretrain_network_kernel (a net_kernel_<iter>.pth).')
        net = build_network(model.opt['network_kernel'])
        model.load_pretrained(net, 'kernel')
        linear = bool((model.opt.get('dp_joint') or {}).get('linear_light', True))
        if getattr(net, 'linear_light', linear) != linear:
            get_root_logger().warning(f'The learned kernels blur {"linear" if net.linear_light else "sRGB"} values '
                                      f'but dp_joint.linear_light is {linear}; set it to {net.linear_light}.')
        with torch.no_grad():  # left/right kernels of the signed radii -R..R, for one or two kernel sets alike
            kernels, radii = net.dp_kernels(), net.signed_radii()
        keep = radii != 0  # radius 0 is the identity; it cannot be rescaled
        return ResampledKernelBank(kernels[:, keep].transpose(0, 1)[:, None], radii[keep].tolist())
    raise ValueError(f"dp_joint.kernels.type must be 'parametric', 'calibrated' or 'learned', got {kind!r}.")


@MODEL_REGISTRY.register()
class DPJointOptimModel(MapValidationModel):
    """Joint defocus map and all-in-focus image from one DP pair by test-time optimisation (Xin et al., ICCV 2021).

    There is nothing to train: :meth:`test` fits a multiplane image to each DP pair
    (:class:`defocusgan_plugin.ops.dp_joint.DPJointSolver`). Run it with ``basicsr/test.py`` on a dataset with
    ``input: dual`` (or ``lq_l`` / ``lq_r`` keys); RGB and grayscale views both work.

    Options (block ``dp_joint``):
        kernels (dict): DP kernel source, see :func:`build_kernel_bank`. Default: parametric Butterworth DP kernels.
        solver (dict): :class:`defocusgan_plugin.ops.dp_joint.DPJointSolver` options: ``preset`` ('release',
            'fast' or none) and any option overriding it (objective, num_layers, colors, levels, lr, weights, ...).
        linear_light (bool | None): The files are sRGB-encoded: optimise in linear light (where blur is linear) and
            encode the all-in-focus image back. Default (None): true, except for linear raw data (samples with
            ``norm_scale``, e.g. :class:`defocusgan_plugin.data.dp_raw_dataset.DPRawPixel4Dataset`).
        radius_range (list[float] | None): Fixed signed [low, high] layer range (full-resolution pixels); None
            estimates it per image (up to ``solver.max_radius``).
        map_filter (dict | None): Guided filter of the output map with the all-in-focus image as guide
            (``radius``, ``eps``); None leaves the map as optimised.

    Samples with a ``norm_scale`` (raw data divided by its joint maximum) are optimised as given and the
    all-in-focus image is multiplied back by it, so outputs and metrics are in the dataset's units (for the Pixel-4
    layout: PNG value / 65535 = (raw - black) / white, the GT's).

    Validation writes per image the all-in-focus image (``<name>_<suffix>.png``, 16-bit), the colour-mapped
    defocus map (``<name>_<suffix>_map.png``; red behind, blue in front of the focal plane) and the signed map as
    ``.npy`` (``results/<name>/defocus_maps/<dataset>/``). Metrics (``val.metrics``): defocus-map metrics
    (AIWE(1), AIWE(2), Spearman) compare the map with the dataset's ``defocus`` map when it has one; every other
    metric compares the all-in-focus image with ``gt`` and is also reported for the input combined view
    (``input_<metric>`` in the log) so the gain is visible.
    """

    def __init__(self, opt):
        super().__init__(opt)
        if opt['is_train']:
            raise ValueError('DPJointOptimModel optimises each test image and has no training; run it with '
                             'basicsr/test.py (or python -m defocusgan_plugin.test).')
        jopt = dict(opt.get('dp_joint') or {})
        unknown = set(jopt) - set(OPTION_KEYS)
        if unknown:
            raise ValueError(f'Unknown option(s) dp_joint.{", dp_joint.".join(sorted(unknown))}; known: '
                             f'{", ".join(OPTION_KEYS)}.')
        solver_opt = dict(jopt.get('solver') or {})
        unknown = set(solver_opt) - set(SOLVER_KEYS)
        if unknown:
            raise ValueError(f'Unknown option(s) dp_joint.solver.{", dp_joint.solver.".join(sorted(unknown))}; '
                             f'known: {", ".join(SOLVER_KEYS)}.')
        try:
            self.solver = DPJointSolver(build_kernel_bank(jopt.get('kernels'), self), **solver_opt)
        except (TypeError, ValueError) as err:
            raise ValueError(f'Option block dp_joint: {err}') from None
        self.linear_light = jopt.get('linear_light')
        if self.linear_light is not None:
            self.linear_light = bool(self.linear_light)
        get_root_logger().info(f'DP joint optimisation: {self.solver.describe()}.')
        self.fixed_range = jopt.get('radius_range')
        if self.fixed_range is not None and (len(self.fixed_range) != 2
                                             or float(self.fixed_range[0]) >= float(self.fixed_range[1])):
            raise ValueError(f'dp_joint.radius_range must be [low, high] with low < high, got {self.fixed_range}.')
        self.map_filter = guided_filter_options(jopt.get('map_filter'), 'dp_joint.map_filter')
        self.input_metric_results = {}

    # ------------------------------------------------------------------ data
    def feed_data(self, data):
        if 'lq_l' in data and 'lq_r' in data:
            left, right = data['lq_l'], data['lq_r']
        elif 'lq' in data and data['lq'].shape[1] % 2 == 0:
            left, right = data['lq'].chunk(2, dim=1)  # concat(L, R) of input: dual
        else:
            raise ValueError('DPJointOptimModel needs the two DP views: use a dataset with input: dual (lq = concat(L, '
                             f'R)) or lq_l / lq_r keys; got keys {sorted(data)}.')
        self.left, self.right = left.to(self.device), right.to(self.device)
        combined = data.get('lq_c')
        self.lq_c = combined.to(self.device) if combined is not None else 0.5 * (self.left + self.right)
        self.gt = data['gt'].to(self.device) if 'gt' in data else None
        self.gt_map = data['defocus'].to(self.device) if 'defocus' in data else None
        # raw data arrives divided by its joint maximum: the outputs are multiplied back to the dataset's units
        scale = data.get('norm_scale')
        self.norm_scale = None if scale is None else scale.to(self.device, torch.float32).view(-1, 1, 1, 1)
        if self.norm_scale is not None:
            if self.linear_light:
                raise ValueError('dp_joint.linear_light: true decodes sRGB, but this dataset delivers linear raw data '
                                 '(it has norm_scale); set dp_joint.linear_light to false or ~.')
            self.lq_c = self.lq_c * self.norm_scale

    # ------------------------------------------------------------------ optimisation
    def _solve_one(self, left, right, scale=None):
        """Optimises one DP pair (1, C, H, W) each; returns (all-in-focus in the files' encoding or, with a
        ``scale`` (the raw data's normalisation), in the dataset's units, map, info)."""
        srgb = self.linear_light if self.linear_light is not None else scale is None
        if srgb:
            left, right = srgb_to_linear(left), srgb_to_linear(right)
        with torch.enable_grad():  # BasicSR's test loop may run under no_grad
            out = self.solver(left, right, self.fixed_range)
        aif, defocus = out['aif'], out['defocus']
        if self.map_filter:
            defocus = guided_filter(aif, defocus, **self.map_filter)
        if srgb:
            aif = linear_to_srgb(aif)
        if scale is not None:
            aif = aif * scale
        return aif.clamp(0, 1), defocus, out

    def test(self):
        aifs, maps = [], []
        logger = get_root_logger()
        for i in range(self.left.shape[0]):
            scale = None if self.norm_scale is None else self.norm_scale[i:i + 1]
            aif, defocus, info = self._solve_one(self.left[i:i + 1], self.right[i:i + 1], scale)
            aifs.append(aif)
            maps.append(defocus)
            logger.info(f'DP joint optimisation (preset {self.solver.preset or "none"}, '
                        f'{self.left.shape[-2]}x{self.left.shape[-1]}): {info["seconds"]:.1f} s, iterations per '
                        f'level {info["iters"]}, layer radii {info["range"][0]:.2f}..{info["range"][1]:.2f} px, '
                        f'loss {info["loss"]:.3g}.')
        self.aif, self.output = torch.cat(aifs), torch.cat(maps)

    def optimize_parameters(self, current_iter):
        raise RuntimeError('DPJointOptimModel has no training step; it optimises each image in test().')

    # ------------------------------------------------------------------ validation (MapValidationModel's loop)
    def _image_metrics(self):
        metrics = (self.opt.get('val') or {}).get('metrics') or {}
        images = {k: v for k, v in metrics.items() if v['type'] not in DEFOCUS_MAP_METRICS}
        return images or self.default_metrics()

    def default_metrics(self):
        """Image metrics reported even when ``val.metrics`` has none."""
        return {'psnr': {'type': 'calculate_dpdd_psnr'}}

    def metric_inputs(self):
        """(all-in-focus, gt) for the image metrics; also scores the input combined view for the log."""
        if self.gt is None:
            return None
        images = MetricImages(self.lq_c, self.gt)  # scored as the outputs are (val.bit_depth)
        for name, metric_opt in self._image_metrics().items():
            value = calculate_metric(images.for_metric(metric_opt, self.val_protocol.bit_depth), metric_opt)
            total, count = self._input_sums.get(name, (0.0, 0))
            self._input_sums[name] = (total + value, count + 1)
        return self.aif, self.gt

    def save_visuals(self, img_name, tag, folder):
        """Writes the all-in-focus image (16-bit) and the colour-mapped defocus map."""
        aif = self.aif[0].detach().cpu().numpy().transpose(1, 2, 0)
        write_image(
            osp.join(folder, f'{img_name}_{tag}.png'), aif[..., ::-1] if aif.shape[2] == 3 else aif, bit_depth=16)
        limit = (self.opt.get('val') or {}).get('map_range') or self.solver.max_radius
        imwrite(
            diverging_colormap(self.output[0, 0].cpu().numpy(), limit), osp.join(folder, f'{img_name}_{tag}_map.png'))

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        self._input_sums = {}
        # the metric labels name the preset, the crop and the units of what was scored
        describe = getattr(dataloader.dataset, 'describe', None)
        units = describe() if describe is not None else "the files' [0, 1] encoding"
        linear = ', optimised in linear light' if describe is None and self.linear_light is not False else ''
        self.metric_view = f'DP-pair input, preset {self.solver.preset or "none"}{linear}, {units}'
        super().nondist_validation(dataloader, current_iter, tb_logger, save_img)
        self.input_metric_results = {name: total / count for name, (total, count) in self._input_sums.items()}
        if self.input_metric_results:
            metrics, input_view = self._image_metrics(), f'the combined view itself, {units}'
            lines = [f'Input combined view of {dataloader.dataset.opt["name"]} (no processing)'] + [
                f'\t # input_{k}: {v:.4f} [{self.val_protocol.label(metrics[k], input_view)}]'
                for k, v in self.input_metric_results.items()
            ]
            get_root_logger().info('\n'.join(lines) + '\n')

    def get_current_visuals(self):
        out = OrderedDict(result=self.aif.detach().cpu(), map=self.output.detach().cpu())
        for key in ('lq_c', 'gt', 'gt_map'):
            value = getattr(self, key, None)
            if value is not None:
                out[key] = value.detach().cpu()
        return out

    def save(self, epoch, current_iter):
        """Nothing to save (no trained weights)."""
