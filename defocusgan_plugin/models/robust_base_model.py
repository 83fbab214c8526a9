"""RobustBaseModel: BasicSR's BaseModel made safe for long, multi-process, CPU or GPU training."""
import inspect
import os
import torch
from basicsr.metrics import calculate_metric
from basicsr.models.base_model import BaseModel
from basicsr.utils import get_root_logger, imwrite
from basicsr.utils.dist_util import master_only
from collections import OrderedDict
from os import path as osp
from torch.nn.parallel import DataParallel, DistributedDataParallel
from tqdm import tqdm

from defocusgan_plugin.metrics.lpips_metric import check_lpips_weights
from defocusgan_plugin.metrics.protocol import MetricImages, ValProtocol, input_view, metric_label, scoring_bit_depth
from defocusgan_plugin.utils.checkpoint import load_state_dict_from, save_object, state_dict_mismatches
from defocusgan_plugin.utils.dist_util import model_device
from defocusgan_plugin.utils.nan_guard import NonFiniteGuard, unwrap

OPTIMIZERS = {
    'Adam': torch.optim.Adam,
    'AdamW': torch.optim.AdamW,
    'SGD': torch.optim.SGD,
    'RMSprop': torch.optim.RMSprop
}
AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}


class RobustBaseModel(BaseModel):
    """BaseModel with CPU/GPU-agnostic DDP, atomic checkpoints, strict safe loading, resumable extra state, a NaN
    guard and DDP-safe validation.

    Put it FIRST in the bases when combining it with a BasicSR model, e.g.
    ``class DefocusGANModel(RobustBaseModel, SRGANModel)``: its methods then take precedence over BasicSR's
    (placement, checkpoints, validation logging) while SRGANModel's training code is inherited as is.

    Conventions (they make BasicSR's ``check_resume`` work): an option block ``network_<x>`` is saved as
    ``net_<x>_<iter>.pth`` and loaded from ``path.pretrain_network_<x>`` (with ``path.strict_load_<x>`` and
    ``path.param_key_<x>``). Options: ``train.nan_max_consecutive`` (default 10), ``find_unused_parameters``, and
    the speed options, all off by default:

    * ``train.amp``: false, bf16 or fp16 - autocast of the network forwards (:meth:`autocast`); fp16 (CUDA only)
      adds a GradScaler (:meth:`backward`, :meth:`guarded_step`) whose state is saved with the training state.
    * ``train.channels_last``: the trained networks (and EMA/frozen copies, :meth:`place`) in channels-last format.
    * ``train.compile``: true or a dict of ``torch.compile`` arguments (e.g. ``{mode: max-autotune}``); each model
      compiles the networks that allow it (:meth:`compile_network`); checkpoints keep the plain key names.
    """

    supported_optimizers = tuple(sorted(OPTIMIZERS))

    def __init__(self, opt):
        train_opt = (opt.get('train') or {}) if opt['is_train'] else {}
        # before BaseModel.__init__: SRModel.__init__ builds and places the networks within it
        self._setup_speed_options(train_opt, model_device(opt))
        super().__init__(opt)
        self.log_dict = OrderedDict()
        self.nan_guard = NonFiniteGuard(
            train_opt.get('nan_max_consecutive', 10), (opt.get('path') or {}).get('models'), bool(opt.get('dist')))
        self._check_validation_options(opt.get('val'))

    @property
    def device(self):
        return self._device

    @device.setter
    def device(self, value):
        # BaseModel.__init__ assigns 'cuda' whenever num_gpu != 0; the plugin's models use this rank's GPU or the CPU
        # (model_device), and must know it before SRModel.__init__ builds the networks on it.
        self._device = model_device(self.opt)

    @staticmethod
    def _check_validation_options(val_opt):
        """Fails at start-up, not at the first validation hours later: bit depth and LPIPS weights."""
        scoring_bit_depth(val_opt)
        for name, metric in ((val_opt or {}).get('metrics') or {}).items():
            if metric.get('type') == 'calculate_lpips':
                check_lpips_weights(metric, name)

    # ------------------------------------------------------------------ speed options
    def _setup_speed_options(self, train_opt, device):
        """Reads ``train.amp``, ``train.channels_last`` and ``train.compile`` (before any network is built)."""
        amp = train_opt.get('amp') or False
        if amp is not False and amp not in AMP_DTYPES:
            raise ValueError(f'Option train.amp must be false, bf16 or fp16, got {amp!r}.')
        if amp == 'fp16' and device.type != 'cuda':
            raise ValueError('Option train.amp: fp16 needs a CUDA device (its GradScaler guards fp16 gradients); use '
                             'bf16 on CPU.')
        if amp == 'bf16' and device.type == 'cuda' and not torch.cuda.is_bf16_supported(including_emulation=False):
            raise ValueError(f'Option train.amp: bf16 needs a GPU with bfloat16 support (Ampere or newer); '
                             f'{torch.cuda.get_device_name(device)} has none: use fp16.')
        self.amp_dtype = AMP_DTYPES.get(amp)
        # dynamic loss scaling for fp16 only (bf16 has fp32's range); a disabled scaler's step() is optimizer.step()
        self.grad_scaler = torch.amp.GradScaler(device.type, enabled=amp == 'fp16')
        channels_last = train_opt.get('channels_last', False)
        if not isinstance(channels_last, bool):
            raise ValueError(f'Option train.channels_last must be true or false, got {channels_last!r}.')
        self.channels_last = channels_last
        compile_opt = train_opt.get('compile') or False
        if compile_opt is not False and compile_opt is not True and not isinstance(compile_opt, dict):
            raise ValueError(f'Option train.compile must be false, true or a dict of torch.compile arguments (e.g. '
                             f'{{mode: max-autotune}}), got {compile_opt!r}.')
        if isinstance(compile_opt, dict):
            allowed = set(inspect.signature(torch.compile).parameters) - {'model'}
            unknown = sorted(set(compile_opt) - allowed)
            if unknown:
                raise ValueError(f'Option train.compile: unknown torch.compile argument(s) {unknown}; use '
                                 f'{sorted(allowed)}.')
        self.compile_opt = {} if compile_opt is True else compile_opt
        if amp or channels_last or compile_opt is not False:
            get_root_logger().info(f'Speed options: amp {amp or "off"}, channels_last {channels_last}, compile '
                                   f'{compile_opt if compile_opt is not False else "off"}.')

    def autocast(self):
        """Autocast context of ``train.amp`` for network forwards (disabled when AMP is off).

        What must stay fp32 runs outside it: the models cast network outputs to float32 before the pixel, SSIM and
        reblur losses, and compute the WGAN-GP penalty without autocast.
        """
        return torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None)

    def backward(self, loss):
        """``loss.backward()``, through the fp16 loss scaler when ``train.amp`` is fp16."""
        self.grad_scaler.scale(loss).backward()

    def guarded_step(self, loss_dict, pairs, current_iter):
        """Steps the ``(network, optimizer)`` pairs of one update together unless the NaN guard rejects it.

        With fp16 the gradients are unscaled first; overflowing steps are the GradScaler's to skip (they happen by
        design while it calibrates the scale), so the guard then checks the loss terms only.

        Args:
            loss_dict (dict[str, Tensor]): Loss terms of the update.
            pairs (list[tuple[nn.Module, Optimizer]]): Networks and their optimisers.
            current_iter (int): Iteration (the guard counts bad iterations, not updates).

        Returns:
            bool: Whether the optimisers stepped (False: skipped by the guard or, with fp16, by the scaler).
        """
        scaling = self.grad_scaler.is_enabled()
        scale = self.grad_scaler.get_scale() if scaling else None
        for _, optimizer in pairs:
            self.grad_scaler.unscale_(optimizer)
        ok = self.nan_guard.check(loss_dict, [net for net, _ in pairs], current_iter, gradients=not scaling)
        if ok:
            for _, optimizer in pairs:
                self.grad_scaler.step(optimizer)
        self.grad_scaler.update()  # after every update: a second update of an optimiser unscales afresh
        # the scaler lowers its scale exactly when it skipped the step for non-finite gradients
        return ok and (not scaling or self.grad_scaler.get_scale() >= scale)

    def compile_network(self, net):
        """``torch.compile`` of ``net`` (around its DDP wrapper, so that DDP's gradient buckets are compiled with it)
        when ``train.compile`` is set; saved weights keep their names (:meth:`get_bare_model` unwraps). Models call
        it for the networks that allow it: not for a critic differentiated twice by a gradient penalty (compiled
        graphs have no double backward)."""
        if self.compile_opt is False:
            return net
        return torch.compile(net, **self.compile_opt)

    def place(self, net):
        """Moves a network that is not trained directly (an EMA copy, a frozen helper) to the device and memory
        format of the trained ones, without a DDP wrapper."""
        net = net.to(self.device)
        return net.to(memory_format=torch.channels_last) if self.channels_last else net

    def get_bare_model(self, net):
        return unwrap(net)  # DataParallel, DDP and torch.compile wrappers, in any nesting

    def model_ema(self, decay=0.999):
        """BasicSR's EMA update of ``net_g_ema`` (its parameters, not buffers), as two multi-tensor operations."""
        source = dict(self.get_bare_model(self.net_g).named_parameters())
        ema = dict(self.net_g_ema.named_parameters())
        targets = [p.data for p in ema.values()]
        torch._foreach_mul_(targets, decay)
        torch._foreach_add_(targets, [source[k].data for k in ema], alpha=1 - decay)

    # ------------------------------------------------------------------ networks
    def model_to_device(self, net):
        """Moves a trained network to the device (channels-last with ``train.channels_last``) and wraps it for DDP.

        Converting the weights suffices: a convolution whose weight is channels-last computes in channels-last
        (cuDNN and oneDNN follow the weight), converting a contiguous input once, and its output stays channels-last
        through the following layers; inputs are therefore left as they are.
        """
        net = self.place(net)
        if self.opt['dist']:
            ids = [self.device.index] if self.device.type == 'cuda' else None
            net = DistributedDataParallel(
                net, device_ids=ids, find_unused_parameters=self.opt.get('find_unused_parameters', False))
        elif self.opt['num_gpu'] > 1:
            net = DataParallel(net)
        return net

    def validation(self, dataloader, current_iter, tb_logger, save_img=False):
        """BasicSR's validation, on the networks unwrapped from DDP and ``torch.compile``; in distributed runs rank
        0 validates alone.

        A DDP forward broadcasts the module's buffers (e.g. LearnableBlurKernel's ``delta``) from rank 0: a
        collective that the other ranks, already training on, never join, so a rank-0-only forward would hang. A
        compiled network would recompile for the eval mode and every new image size; validation runs eagerly.
        """
        wrapped = {k: v for k, v in vars(self).items() if isinstance(v, torch.nn.Module) and unwrap(v) is not v}
        try:
            for key, net in wrapped.items():
                setattr(self, key, unwrap(net))
            super().validation(dataloader, current_iter, tb_logger, save_img)
        finally:
            for key, net in wrapped.items():
                setattr(self, key, net)

    def dist_validation(self, dataloader, current_iter, tb_logger, save_img):
        if self.opt['rank'] == 0:
            self.nondist_validation(dataloader, current_iter, tb_logger, save_img)

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        """SRModel's validation (same images, file names, pbar and best-metric records) that scores at
        ``val.bit_depth`` and labels each metric with its protocol (:mod:`defocusgan_plugin.metrics.protocol`).

        With ``val.bit_depth: 16`` the plugin's full-precision metrics get uint16 images and the saved images are
        16-bit PNGs; BasicSR's own metrics still get ``tensor2img``'s uint8 images. Models whose output is not
        ``get_current_visuals()['result']`` override this (e.g. MapValidationModel).
        """
        dataset_name = dataloader.dataset.opt['name']
        val_opt = self.opt['val']
        metrics = val_opt.get('metrics')
        self.val_protocol = protocol = ValProtocol(val_opt, dataloader.dataset)
        if metrics is not None:
            self.metric_results = {metric: 0 for metric in metrics}
            self._initialize_best_metric_results(dataset_name)
        pbar = tqdm(total=len(dataloader), unit='image') if val_opt.get('pbar', False) else None
        views = set()
        for idx, val_data in enumerate(dataloader):
            img_name = osp.splitext(osp.basename(val_data['lq_path'][0]))[0]
            protocol.add_sample(val_data)
            views.add(input_view(val_data))
            self.feed_data(val_data)
            self.test()
            visuals = self.get_current_visuals()
            images = MetricImages(visuals['result'], visuals.get('gt'))
            if 'gt' in visuals:
                del self.gt
            del self.lq  # free memory before the next image, as SRModel does
            del self.output
            torch.cuda.empty_cache()

            if save_img:
                if self.opt['is_train']:
                    save_path = osp.join(self.opt['path']['visualization'], img_name, f'{img_name}_{current_iter}.png')
                else:
                    suffix = val_opt.get('suffix') or self.opt['name']
                    save_path = osp.join(self.opt['path']['visualization'], dataset_name, f'{img_name}_{suffix}.png')
                imwrite(images.at(protocol.bit_depth)['img'], save_path)
            if metrics is not None:
                for name, metric_opt in metrics.items():
                    self.metric_results[name] += calculate_metric(
                        images.for_metric(metric_opt, protocol.bit_depth), metric_opt)
            if pbar is not None:
                pbar.update(1)
                pbar.set_description(f'Test {img_name}')
        if pbar is not None:
            pbar.close()
        if metrics is not None:
            view = ' / '.join(sorted(views)) or None
            self.metric_protocols = {name: protocol.label(metric_opt, view) for name, metric_opt in metrics.items()}
            for metric in self.metric_results:
                self.metric_results[metric] /= (idx + 1)
                self._update_best_metric_result(dataset_name, metric, self.metric_results[metric], current_iter)
            self._log_validation_metric_values(current_iter, dataset_name, tb_logger)

    def _log_validation_metric_values(self, current_iter, dataset_name, tb_logger):
        """Logs ``<name>: <value> [<protocol label>]`` per metric (with the best value so far)."""
        lines = [f'Validation {dataset_name}']
        best = getattr(self, 'best_metric_results', {}).get(dataset_name, {})
        labels = getattr(self, 'metric_protocols', None) or {}
        metric_opts = (self.opt.get('val') or {}).get('metrics') or {}
        for metric, value in self.metric_results.items():
            label = labels.get(metric)
            if label is None and metric in metric_opts:  # a loop that recorded no protocol: BasicSR's uint8 scoring
                label = metric_label(metric_opts[metric], scored=8)
            line = f'\t # {metric}: {value:.4f}' + (f' [{label}]' if label else '')
            if metric in best:
                line += f'\tBest: {best[metric]["val"]:.4f} @ {best[metric]["iter"]} iter'
            lines.append(line)
        get_root_logger().info('\n'.join(lines) + '\n')
        if tb_logger:
            for metric, value in self.metric_results.items():
                tb_logger.add_scalar(f'metrics/{dataset_name}/{metric}', value, current_iter)

    def get_optimizer(self, optim_type, params, lr, **kwargs):
        if optim_type not in OPTIMIZERS:
            raise ValueError(f"Optimizer type '{optim_type}' is not supported; use one of {sorted(OPTIMIZERS)}.")
        return OPTIMIZERS[optim_type](params, lr, **kwargs)

    def load_pretrained(self, net, label):
        """Loads ``path.pretrain_network_<label>`` into ``net`` if set (honouring strict_load / param_key)."""
        path_opt = self.opt['path']
        load_path = path_opt.get(f'pretrain_network_{label}')
        if load_path is not None:
            self.load_network(net, load_path, path_opt.get(f'strict_load_{label}', True),
                              path_opt.get(f'param_key_{label}', 'params'))

    def load_network(self, net, load_path, strict=True, param_key='params'):
        """Loads weights safely; strict mismatches raise an error listing the first differences."""
        logger = get_root_logger()
        net = self.get_bare_model(net)
        state, key = load_state_dict_from(load_path, param_key)  # falls back to 'params', then 'state_dict'
        if param_key is not None and key is not None and key != param_key:
            logger.info(f'Loading: {param_key} does not exist in {load_path}, use {key}.')
        param_key = key
        expected = net.state_dict()
        problems = state_dict_mismatches(expected, state)
        if problems and strict:
            raise ValueError(f'Checkpoint {load_path} does not match {net.__class__.__name__}: ' + '; '.join(problems) +
                             '. Set path.strict_load_<net>: false to load only the matching weights.')
        if problems:
            logger.warning(f'Loading {load_path} non-strictly; skipped: ' + '; '.join(problems))
            state = {k: v for k, v in state.items() if k in expected and v.shape == expected[k].shape}
        net.load_state_dict(state, strict=strict)
        logger.info(f'Loaded {net.__class__.__name__} from {load_path} [{param_key}].')

    # ------------------------------------------------------------------ checkpoints
    @master_only
    def save_network(self, net, net_label, current_iter, param_key='params'):
        label = 'latest' if current_iter == -1 else current_iter
        nets = net if isinstance(net, list) else [net]
        keys = param_key if isinstance(param_key, list) else [param_key]
        if len(nets) != len(keys):
            raise ValueError('save_network needs one param_key per network.')
        save = {}
        for net_, key in zip(nets, keys):
            state = self.get_bare_model(net_).state_dict()
            save[key] = OrderedDict(
                (k[7:] if k.startswith('module.') else k, v.detach().cpu()) for k, v in state.items())
        save_object(save, os.path.join(self.opt['path']['models'], f'{net_label}_{label}.pth'))

    def extra_training_state(self):
        """Model-specific state to resume (e.g. the stage-1 phase); override and return a dict of plain values."""
        return {}

    def load_extra_training_state(self, state):
        """Restores what :meth:`extra_training_state` returned."""

    @master_only
    def save_training_state(self, epoch, current_iter):
        if current_iter == -1:
            return
        state = {
            'epoch': epoch,
            'iter': current_iter,
            'optimizers': [o.state_dict() for o in self.optimizers],
            'schedulers': [s.state_dict() for s in self.schedulers],
            'extra': self.extra_training_state(),
            'grad_scaler': self.grad_scaler.state_dict()
        }
        save_object(state, os.path.join(self.opt['path']['training_states'], f'{current_iter}.state'))

    def resume_training(self, resume_state):
        if len(resume_state['optimizers']) != len(self.optimizers):
            raise ValueError(f"The training state has {len(resume_state['optimizers'])} optimizers but the model "
                             f'has {len(self.optimizers)}; was it saved by another model_type?')
        super().resume_training(resume_state)
        if resume_state.get('grad_scaler'):
            self.grad_scaler.load_state_dict(resume_state['grad_scaler'])
        self.load_extra_training_state(resume_state.get('extra') or {})

    # ------------------------------------------------------------------ numerical safety
    def step_is_finite(self, loss_dict, nets, current_iter):
        """Whether the optimiser step may be taken (see :class:`defocusgan_plugin.utils.nan_guard.NonFiniteGuard`)."""
        return self.nan_guard.check(loss_dict, nets, current_iter)
