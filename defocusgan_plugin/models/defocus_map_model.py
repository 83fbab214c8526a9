import cv2
import numpy as np
import os
import torch
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.utils import get_root_logger, imwrite, tensor2img
from basicsr.utils.registry import MODEL_REGISTRY
from collections import OrderedDict
from os import path as osp

from defocusgan_plugin.models.map_validation_model import MapValidationModel, diverging_colormap
from defocusgan_plugin.ops.render import reblur_coc

PHASES = ('network', 'kernel')


def stage1_phase(current_iter, network_iters, alternate_iters):
    """'network' or 'kernel': which part trains at iteration ``current_iter`` (1-based) of ``train.phase_schedule``.

    The network alone for ``network_iters`` iterations, then blocks of ``alternate_iters``: kernel first, then network.
    """
    after = current_iter - network_iters - 1
    if after < 0 or alternate_iters == 0:
        return 'network'
    return PHASES[1 - (after // alternate_iters) % 2]


def kernel_grid(kernels, cell_gap=1):
    """Stack of kernels (N, K, K) -> one uint8 image, each kernel scaled to its own peak, in a near-square grid."""
    num, size = kernels.shape[0], kernels.shape[-1]
    cols = int(np.ceil(np.sqrt(num)))
    rows = int(np.ceil(num / cols))
    step = size + cell_gap
    grid = np.zeros((rows * step - cell_gap, cols * step - cell_gap), dtype=np.float32)
    for i, kernel in enumerate(kernels):
        r, c = divmod(i, cols)
        grid[r * step:r * step + size, c * step:c * step + size] = kernel / max(float(kernel.max()), 1e-12)
    grid = cv2.resize(grid, None, fx=4, fy=4, interpolation=cv2.INTER_NEAREST)
    return cv2.applyColorMap((grid * 255.0 + 0.5).astype(np.uint8), cv2.COLORMAP_INFERNO)


@MODEL_REGISTRY.register()
class DefocusMapModel(MapValidationModel):
    """DefocusGAN stage 1: unsupervised defocus-map estimation with a learnable blur kernel.

    ``network_map`` (e.g. :class:`DefocusMapNet`) maps the dual-pixel views to a signed CoC map; ``network_kernel``
    (:class:`LearnableBlurKernel`) holds one kernel per integer radius. By default no ground-truth map is used: the
    sharp image ``gt`` reblurred by the map and the kernels (:func:`defocusgan_plugin.ops.render.reblur_coc`) must
    match the captured blurred image, and the rendered DP views the captured ones (``train.reblur_opt``), plus a
    gradient prior on the map (``train.prior_opt``, switched on after ``train.prior_start_iter``). Our options, off by
    default: ``train.map_opt`` (e.g. ``{type: L1Loss}``) adds a supervised loss of the map against the dataset's GT
    map in the network phases (synthetic sets have one; NaN pixels are left out); ``train.search_opt``
    (:class:`ReblurSearchMapLoss`, unsupervised) adds a confidence-weighted loss of the map against the radius that an
    exhaustive search of the reblur objective finds from the sharp image, the views and the current kernels. How the
    kernels blur (signed kernel sets, 'gather' or 'normalized' compositing, zero or reflect padding, linear light) is
    read from the kernel module (:class:`LearnableBlurKernel`); a map with one channel per colour channel (the release's
    ``DefocusMapReleaseNet``) blurs each colour channel by its own map channel.

    Phases (DefocusGAN): the network alone with the kernels fixed for ``train.phase_schedule.network_iters``, then
    kernel-only and network-only phases of ``alternate_iters`` each, in turn (``alternate_iters: 0`` never trains the
    kernels). The frozen part runs without gradients and its optimiser does not step, so it stays bit-identical.
    Optimisers: ``train.optim_map`` and ``train.optim_kernel``; the phase is saved with the training state. With
    ``train.amp`` only the map network runs under autocast: the kernels, the reblur and the losses stay fp32;
    ``train.compile`` compiles the map network.

    Validation writes per image a colour-mapped map (``*_map.png``; red behind, blue in front of the focal plane) and
    the reblurred image (``*_reblur.png``), and the kernels as ``.npy`` and a PNG grid. Metrics (``val.metrics``):
    the defocus-map metrics (``calculate_aiwe1``, ``calculate_aiwe2``, ``calculate_spearman_error``) compare the map
    with the dataset's ``defocus`` map and are skipped without one; every other metric compares the reblurred image
    with the captured one (the reblur PSNR ``reblur_psnr`` is always reported). At test time the signed maps are also
    written as ``.npy`` to ``results/<name>/defocus_maps/<dataset>/`` (usable as ``dataroot_defocus``).
    """

    def __init__(self, opt):
        super().__init__(opt)
        for key in ('network_map', 'network_kernel'):
            if key not in opt:
                raise KeyError(f'{self.__class__.__name__} needs the option block {key}.')
        self.net_map = self.model_to_device(build_network(opt['network_map']))
        self.net_kernel = self.model_to_device(build_network(opt['network_kernel']))
        self.print_network(self.net_map)
        self.print_network(self.net_kernel)
        self.load_pretrained(self.net_map, 'map')
        self.load_pretrained(self.net_kernel, 'kernel')
        self.kernel_module = self.get_bare_model(self.net_kernel)
        cap = getattr(self.get_bare_model(self.net_map), 'cap', None)
        if cap is not None and cap > self.kernel_module.max_radius:
            raise ValueError(f'network_map.cap ({cap}) exceeds network_kernel.max_radius '
                             f'({self.kernel_module.max_radius}): every CoC the map can output needs a kernel.')
        self.phase = None
        if self.is_train:
            self.init_training_settings()
            self.net_map = self.compile_network(self.net_map)  # not the kernel module: a few small tensor operations

    # ------------------------------------------------------------------ training set-up
    def init_training_settings(self):
        train_opt = self.opt['train']
        self.net_map.train()
        self.net_kernel.train()
        if 'reblur_opt' not in train_opt:
            raise KeyError(f'{self.__class__.__name__} needs the option block train.reblur_opt '
                           '(type: ReblurGeometricLoss).')
        self.cri_reblur = build_loss(train_opt['reblur_opt']).to(self.device)
        self.cri_prior = build_loss(train_opt['prior_opt']).to(self.device) if train_opt.get('prior_opt') else None
        self.prior_start_iter = int(train_opt.get('prior_start_iter', 0))
        # our option, off by default (the release is unsupervised): the map against the dataset's GT map
        self.cri_map = build_loss(train_opt['map_opt']).to(self.device) if train_opt.get('map_opt') else None
        # our option, off by default, unsupervised: the map against the reblur objective's exhaustive search
        self.cri_search = build_loss(train_opt['search_opt']).to(self.device) if train_opt.get('search_opt') else None
        schedule = train_opt.get('phase_schedule') or {}
        self.network_iters = int(schedule.get('network_iters', 0))
        self.alternate_iters = int(schedule.get('alternate_iters', 0))
        if self.network_iters < 0 or self.alternate_iters < 0:
            raise ValueError('train.phase_schedule: network_iters and alternate_iters must be >= 0, got '
                             f'{self.network_iters} and {self.alternate_iters}.')
        self.setup_optimizers()
        if train_opt.get('scheduler'):
            self.setup_schedulers()

    def setup_optimizers(self):
        train_opt = self.opt['train']
        for label, net in (('map', self.net_map), ('kernel', self.net_kernel)):
            key = f'optim_{label}'
            if key not in train_opt:
                raise KeyError(f'{self.__class__.__name__} needs the option block train.{key}.')
            optim_opt = dict(train_opt[key])
            optimizer = self.get_optimizer(optim_opt.pop('type'), net.parameters(), **optim_opt)
            setattr(self, f'optimizer_{label}', optimizer)
            self.optimizers.append(optimizer)

    def phase_at(self, current_iter):
        """'network' or 'kernel': which part trains at iteration ``current_iter`` (1-based)."""
        return stage1_phase(current_iter, self.network_iters, self.alternate_iters)

    def extra_training_state(self):
        return {'phase': self.phase, 'phase_schedule': [self.network_iters, self.alternate_iters]}

    def load_extra_training_state(self, state):
        self.phase = state.get('phase')
        saved = state.get('phase_schedule')
        if saved is not None and list(saved) != [self.network_iters, self.alternate_iters]:
            get_root_logger().warning(f'Resuming with train.phase_schedule {self.network_iters}/{self.alternate_iters}'
                                      f' (network_iters/alternate_iters) instead of the saved {saved[0]}/{saved[1]}; '
                                      'the phase follows the new schedule.')

    # ------------------------------------------------------------------ data and forward
    def feed_data(self, data):
        if 'lq_l' not in data or 'lq_r' not in data:
            raise KeyError(f'{self.__class__.__name__} needs the dual-pixel views (lq_l, lq_r) from the dataset; use '
                           'DPDDDataset with the {split}_l/{split}_r folders, or SyntheticDPDataset.')
        left, right = data['lq_l'].to(self.device), data['lq_r'].to(self.device)
        self.lq = torch.cat([left, right], dim=1)
        self.views = torch.stack([left, right], dim=1)
        blurred = data.get('lq_c', data.get('lq'))  # lq is the combined view only with input: combined
        self.blurred = blurred.to(self.device) if blurred is not None and blurred.shape[1] == left.shape[1] else None
        self.gt = data['gt'].to(self.device) if 'gt' in data else None
        self.gt_map = data['defocus'].to(self.device) if 'defocus' in data else None

    def reblur(self, defocus_map, kernels, views=False):
        """Reblurs ``self.gt`` with a map and kernels; returns (combined, DP views or None)."""
        dp = self.kernel_module.dp_kernels(kernels) if views else None
        # conv2d's backward to its weights is far slower than FFT's (scripts/benchmark_reblur.py)
        method = 'fft' if kernels.requires_grad else 'auto'
        module = self.kernel_module
        return reblur_coc(
            self.gt,
            defocus_map,
            kernels,
            dp,
            linear_light=module.linear_light,
            method=method,
            signed=module.signed,
            composite=module.composite,
            padding=module.padding)

    def update_phase(self, current_iter):
        phase = self.phase_at(current_iter)
        if phase != self.phase:
            frozen = 'kernels' if phase == 'network' else 'map network'
            get_root_logger().info(f'Iteration {current_iter}: stage-1 phase {phase}-only ({frozen} frozen).')
            self.phase = phase
        return phase

    def optimize_parameters(self, current_iter):
        if self.gt is None or self.blurred is None:
            raise KeyError(f'{self.__class__.__name__} trains on gt (sharp) and lq/lq_c (blurred combined) images.')
        phase = self.update_phase(current_iter)
        self.optimizer_map.zero_grad(set_to_none=True)
        self.optimizer_kernel.zero_grad(set_to_none=True)
        # The frozen part runs without autograd: no gradient can reach it, and DDP does not wait for one.
        with torch.set_grad_enabled(phase == 'network'), self.autocast():
            output = self.net_map(self.lq)
        # everything after the map network in fp32: the kernels, the reblur (FFT convolutions, whose half-precision
        # round-off grows with the transform size) and the losses
        self.output = output.float()
        with torch.set_grad_enabled(phase == 'kernel'):
            kernels = self.net_kernel().float()
        self.reblurred, reblurred_views = self.reblur(self.output, kernels, views=self.cri_reblur.uses_views)

        loss_dict = OrderedDict()
        l_total = loss_dict['l_reblur'] = self.cri_reblur(self.reblurred, self.blurred, reblurred_views, self.views)
        if phase == 'network' and self.cri_prior is not None and current_iter > self.prior_start_iter:
            loss_dict['l_prior'] = self.cri_prior(self.output, self.gt)
            l_total = l_total + loss_dict['l_prior']
        if phase == 'network' and self.cri_map is not None:
            loss_dict['l_map'] = self.map_loss()
            l_total = l_total + loss_dict['l_map']
        if phase == 'network' and self.cri_search is not None:
            dp_kernels = self.kernel_module.dp_kernels(kernels.detach())
            loss_dict['l_search'] = self.cri_search(self.output, self.gt, self.views, dp_kernels,
                                                    self.kernel_module.linear_light)
            l_total = l_total + loss_dict['l_search']
        self.backward(l_total)
        trained = (self.net_map, self.optimizer_map) if phase == 'network' else (self.net_kernel, self.optimizer_kernel)
        self.guarded_step(loss_dict, [trained], current_iter)
        self.log_dict = self.reduce_loss_dict(loss_dict)

    def map_loss(self):
        """``train.map_opt`` between the predicted map and the GT map; NaN GT pixels (no depth) are left out."""
        if self.gt_map is None:
            raise KeyError('train.map_opt (supervised map loss) needs GT defocus maps from the dataset (the '
                           "'defocus' key: DPDDDataset reads {split}_defocus/*.npy); remove train.map_opt to train "
                           'unsupervised.')
        valid = torch.isfinite(self.gt_map)
        target = torch.where(valid, self.gt_map, torch.zeros_like(self.gt_map))
        shape = self.output.shape  # a map per colour channel (DefocusMapReleaseNet) is compared channel by channel
        return self.cri_map(self.output, target.expand(shape), weight=valid.to(self.output.dtype).expand(shape))

    def test(self):
        self.net_map.eval()
        with torch.no_grad():
            self.output = self.net_map(self.lq)
            self.reblurred = self.reblur(self.output, self.net_kernel())[0] if self.gt is not None else None
        self.net_map.train()

    # ------------------------------------------------------------------ validation
    def metric_inputs(self):
        """(prediction, reference) images for the image metrics: the reblurred vs the captured blurred image."""
        if self.reblurred is None or self.blurred is None:
            return None
        return self.reblurred, self.blurred

    def default_metrics(self):
        """Image metrics reported even when ``val.metrics`` has none."""
        return {'reblur_psnr': {'type': 'calculate_dpdd_psnr'}}

    def save_visuals(self, img_name, tag, folder):
        """Writes the colour-mapped map and the reblurred image of the current sample."""
        limit = (self.opt.get('val') or {}).get('map_range') or getattr(self.get_bare_model(self.net_map), 'cap', 1)
        out_map = self.output[0].detach().mean(0).cpu().numpy()  # a map per colour channel (release): their mean
        imwrite(diverging_colormap(out_map, limit), osp.join(folder, f'{img_name}_{tag}_map.png'))
        if self.reblurred is not None:
            imwrite(tensor2img(self.reblurred.detach().cpu()), osp.join(folder, f'{img_name}_{tag}_reblur.png'))

    def save_kernels(self, tag):
        """Writes the current kernels as ``kernels/kernels_<tag>.npy`` (R + 1, K, K) and a PNG grid."""
        with torch.no_grad():
            kernels = self.net_kernel().cpu().numpy()
        folder = osp.join(self.opt['path']['visualization'], 'kernels')
        os.makedirs(folder, exist_ok=True)
        np.save(osp.join(folder, f'kernels_{tag}.npy'), kernels)
        imwrite(kernel_grid(kernels), osp.join(folder, f'kernels_{tag}.png'))

    visual_keys = ('reblurred', 'blurred', 'gt', 'gt_map')

    def get_current_visuals(self):
        out = OrderedDict(map=self.output.detach().cpu())
        for key in self.visual_keys:
            value = getattr(self, key, None)
            if value is not None:
                out[key] = value.detach().cpu()
        return out

    def save(self, epoch, current_iter):
        self.save_network(self.net_map, 'net_map', current_iter)
        self.save_network(self.net_kernel, 'net_kernel', current_iter)
        self.save_training_state(epoch, current_iter)
