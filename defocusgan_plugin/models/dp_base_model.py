"""Base class of the plugin's models: BasicSR's BaseModel made safe for long, multi-process, CPU or GPU training.

What it adds to ``basicsr.models.base_model.BaseModel`` (subclasses get it for free):

* CPU-capable placement and DDP wrapping (BasicSR asks ``torch.cuda.current_device()`` unconditionally);
* checkpoints written atomically (temporary file + rename) and loaded with ``weights_only=True``;
* strict loading that fails with the first mismatching keys/shapes (``strict_load_*: false`` loads what matches);
* extra training state (stage-1 phase, annealing weight, ...) saved and restored with the optimisers;
* a NaN/Inf guard: :meth:`step_is_finite` skips a step whose loss or gradients are not finite, logs the iteration and
  the offending loss term, and stops with a clear error after ``train.nan_max_consecutive`` bad steps in a row (in
  distributed training the decision is all-reduced: a NaN on one rank makes every rank skip);
* distributed validation on rank 0 alone without a hang (on the networks unwrapped from DDP).

Conventions (they make BasicSR's ``check_resume`` work): an option block ``network_<x>`` is saved as
``net_<x>_<iter>.pth`` and loaded from ``path.pretrain_network_<x>`` (with ``path.strict_load_<x>`` and
``path.param_key_<x>``).
"""
import os
import torch
import torch.distributed as dist
from basicsr.models.base_model import BaseModel
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only
from collections import OrderedDict
from torch.nn.parallel import DataParallel, DistributedDataParallel

from defocusgan_plugin.utils.checkpoint import load_checkpoint, save_object
from defocusgan_plugin.utils.dist_util import model_device

OPTIMIZERS = {'Adam': torch.optim.Adam, 'AdamW': torch.optim.AdamW, 'SGD': torch.optim.SGD,
              'RMSprop': torch.optim.RMSprop}


def state_dict_mismatches(expected, loaded, limit=5):
    """Human-readable differences between two state dicts (missing, unexpected, shape), at most ``limit`` each."""
    missing = [k for k in expected if k not in loaded]
    unexpected = [k for k in loaded if k not in expected]
    shapes = [f'{k}: checkpoint {tuple(loaded[k].shape)} vs network {tuple(expected[k].shape)}' for k in expected
              if k in loaded and tuple(loaded[k].shape) != tuple(expected[k].shape)]
    lines = []
    for title, items in (('missing in checkpoint', missing), ('not in network', unexpected), ('shape', shapes)):
        if items:
            more = f' (+{len(items) - limit} more)' if len(items) > limit else ''
            lines.append(f'{title}: {", ".join(items[:limit])}{more}')
    return lines


def _check_ddp_gradients(net):
    """Raises if a DDP network with ``find_unused_parameters=False`` has trainable parameters without gradient.

    DDP then never all-reduces the gradient bucket holding them, so the replicas silently diverge (or DDP fails at
    the next forward with grad); this names the parameters and the fix instead.
    """
    if not isinstance(net, DistributedDataParallel) or net.find_unused_parameters:
        return
    unused = [name for name, p in net.module.named_parameters() if p.requires_grad and p.grad is None]
    if unused:
        more = f' (+{len(unused) - 5} more)' if len(unused) > 5 else ''
        raise RuntimeError(f'{net.module.__class__.__name__}: parameters {", ".join(unused[:5])}{more} got no '
                           'gradient in this step; under DDP their gradients would not be averaged across ranks and '
                           'the replicas would diverge. Set the top-level option find_unused_parameters: true, or '
                           'remove the unused parameters from the network.')


class DPBaseModel(BaseModel):
    """BaseModel with CPU/GPU-agnostic DDP, atomic checkpoints, strict safe loading, extra state and a NaN guard."""

    def __init__(self, opt):
        super().__init__(opt)
        self.device = model_device(opt)
        self.log_dict = OrderedDict()
        train_opt = opt.get('train') or {}
        self.nan_max_consecutive = int(train_opt.get('nan_max_consecutive', 10))
        self._bad_steps = 0

    # ------------------------------------------------------------------ networks
    def model_to_device(self, net):
        net = net.to(self.device)
        if self.opt['dist']:
            ids = [self.device.index] if self.device.type == 'cuda' else None
            net = DistributedDataParallel(net, device_ids=ids,
                                          find_unused_parameters=self.opt.get('find_unused_parameters', False))
        elif self.opt['num_gpu'] > 1:
            net = DataParallel(net)
        return net

    def validation(self, dataloader, current_iter, tb_logger, save_img=False):
        """BasicSR's validation; in distributed runs rank 0 validates alone, on the networks unwrapped from DDP.

        A DDP forward broadcasts the module's buffers (e.g. LearnableBlurKernel's ``delta``) from rank 0: a
        collective that the other ranks, already training on, never join, so a rank-0-only forward would hang.
        """
        wrapped = {k: v for k, v in vars(self).items() if isinstance(v, DistributedDataParallel)}
        try:
            for key, net in wrapped.items():
                setattr(self, key, net.module)
            super().validation(dataloader, current_iter, tb_logger, save_img)
        finally:
            for key, net in wrapped.items():
                setattr(self, key, net)

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
        state = load_checkpoint(load_path)
        if param_key is not None and isinstance(state, dict):
            if param_key not in state and 'params' in state:
                logger.info(f'Loading: {param_key} does not exist in {load_path}, use params.')
                param_key = 'params'
            if param_key in state:
                state = state[param_key]
        state = OrderedDict((k[7:] if k.startswith('module.') else k, v) for k, v in state.items())
        expected = net.state_dict()
        problems = state_dict_mismatches(expected, state)
        if problems and strict:
            raise ValueError(f'Checkpoint {load_path} does not match {net.__class__.__name__}: ' + '; '.join(problems)
                             + '. Set path.strict_load_<net>: false to load only the matching weights.')
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
            save[key] = OrderedDict((k[7:] if k.startswith('module.') else k, v.detach().cpu())
                                    for k, v in state.items())
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
        state = {'epoch': epoch, 'iter': current_iter, 'optimizers': [o.state_dict() for o in self.optimizers],
                 'schedulers': [s.state_dict() for s in self.schedulers], 'extra': self.extra_training_state()}
        save_object(state, os.path.join(self.opt['path']['training_states'], f'{current_iter}.state'))

    def resume_training(self, resume_state):
        if len(resume_state['optimizers']) != len(self.optimizers):
            raise ValueError(f"The training state has {len(resume_state['optimizers'])} optimizers but the model "
                             f'has {len(self.optimizers)}; was it saved by another model_type?')
        super().resume_training(resume_state)
        self.load_extra_training_state(resume_state.get('extra') or {})

    # ------------------------------------------------------------------ numerical safety
    def step_is_finite(self, loss_dict, nets, current_iter):
        """Call after ``backward()`` and before ``optimizer.step()``; False means: skip this step.

        Args:
            loss_dict (dict[str, Tensor]): Loss terms of the step (named in the log when non-finite).
            nets (list[nn.Module]): Networks whose gradients are checked.
            current_iter (int): Iteration, for the log.

        Returns:
            bool: True when every loss term and gradient is finite (on every rank in distributed training: the
            decision is all-reduced, so all ranks skip together).

        Raises:
            FloatingPointError: After ``train.nan_max_consecutive`` non-finite steps in a row.
            RuntimeError: A DDP-wrapped network (``find_unused_parameters: false``) has parameters without gradient.
        """
        for net in nets:
            _check_ddp_gradients(net)
        bad = [name for name, value in loss_dict.items() if torch.is_tensor(value) and not torch.isfinite(value).all()]
        if not bad:
            for net in nets:
                grads = [p.grad for p in net.parameters() if p.grad is not None]
                if grads and not all(torch.isfinite(g).all() for g in grads):
                    bad = [f'gradient of {self.get_bare_model(net).__class__.__name__}']
                    break
        if self.opt.get('dist') and dist.is_available() and dist.is_initialized():
            # every rank must take the same decision, or the DDP replicas diverge (and the next collective hangs)
            flag = torch.tensor([1.0 if bad else 0.0], device=self.device if dist.get_backend() == 'nccl' else 'cpu')
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if flag.item() > 0 and not bad:
                bad = ['values on another rank']
        if not bad:
            self._bad_steps = 0
            return True
        self._bad_steps += 1
        for net in nets:
            net.zero_grad(set_to_none=True)
        logger = get_root_logger()
        logger.warning(f'Iteration {current_iter}: non-finite {", ".join(bad)}; step skipped '
                       f'({self._bad_steps}/{self.nan_max_consecutive} in a row).')
        if self._bad_steps >= self.nan_max_consecutive:
            raise FloatingPointError(f'Training stopped at iteration {current_iter}: {self._bad_steps} consecutive '
                                     f'steps with non-finite {", ".join(bad)}. The last good checkpoint is kept in '
                                     f"{self.opt['path'].get('models')}; lower the learning rate or check the data.")
        return False

