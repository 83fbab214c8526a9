"""Skips training updates whose losses or gradients are not finite, and stops after too many bad iterations in a row."""
import math
import torch
import torch.distributed as dist
from basicsr.utils import get_root_logger
from torch.nn.parallel import DataParallel, DistributedDataParallel


def unwrap(net):
    """The module inside DataParallel / DistributedDataParallel / ``torch.compile`` wrappers (in any nesting)."""
    while True:
        if isinstance(net, (DataParallel, DistributedDataParallel)):
            net = net.module
        elif isinstance(getattr(net, '_orig_mod', None), torch.nn.Module):  # torch.compile's OptimizedModule
            net = net._orig_mod
        else:
            return net


def _ddp(net):
    """The DistributedDataParallel wrapper of ``net`` (possibly inside a ``torch.compile`` wrapper), or None."""
    while not isinstance(net, DistributedDataParallel):
        net = getattr(net, '_orig_mod', None)
        if not isinstance(net, torch.nn.Module):
            return None
    return net


def check_ddp_gradients(net):
    """Raises if a DDP network with ``find_unused_parameters=False`` has trainable parameters without gradient.

    DDP never all-reduces the bucket holding such parameters, so the replicas would silently diverge.
    """
    ddp = _ddp(net)
    if ddp is None or ddp.find_unused_parameters:
        return
    unused = [name for name, p in ddp.module.named_parameters() if p.requires_grad and p.grad is None]
    if unused:
        more = f' (+{len(unused) - 5} more)' if len(unused) > 5 else ''
        raise RuntimeError(f'{unwrap(net).__class__.__name__}: parameters {", ".join(unused[:5])}{more} got no '
                           'gradient in this step; under DDP their gradients would not be averaged across ranks and '
                           'the replicas would diverge. Set the top-level option find_unused_parameters: true, or '
                           'remove the unused parameters from the network.')


def _all_finite(tensors):
    """Whether every tensor is finite, with one device synchronisation (not one per tensor)."""
    tensors = [t.detach() if t.is_floating_point() else t.detach().float() for t in tensors]
    if not tensors:
        return True
    return bool(torch.isfinite(torch.nn.utils.get_total_norm(tensors, norm_type=math.inf)))  # max |x|: no overflow


class NonFiniteGuard:
    """Decides after ``backward()`` whether an optimiser update may be taken, and counts bad iterations.

    An update whose loss terms or gradients hold NaN/Inf is skipped (its gradients are cleared) and logged with the
    iteration and the offending term. An iteration is bad when any of its updates was (a model may make several,
    e.g. DefocusGAN's critic and generator updates); after ``max_consecutive`` bad iterations in a row training stops
    with an error, and an iteration whose updates were all good resets the count. In distributed training the
    decision is all-reduced, so every rank skips the same updates.

    Args:
        max_consecutive (int): Bad iterations in a row that stop training (option ``train.nan_max_consecutive``).
        checkpoint_dir (str | None): Where the last good checkpoints are, for the error message.
        distributed (bool): Whether a process group is used (option ``dist``).
    """

    def __init__(self, max_consecutive=10, checkpoint_dir=None, distributed=False):
        if int(max_consecutive) < 1:
            raise ValueError(f'Option train.nan_max_consecutive must be >= 1, got {max_consecutive}.')
        self.max_consecutive = int(max_consecutive)
        self.checkpoint_dir = checkpoint_dir
        self.distributed = distributed
        self.consecutive = 0  # bad iterations in a row so far, the current one included
        self._iter, self._before, self._iter_bad = None, 0, False  # the iteration being checked

    def _bad_terms(self, loss_dict, nets, gradients):
        terms = {name: value for name, value in loss_dict.items() if torch.is_tensor(value)}
        if not _all_finite(list(terms.values())):
            return [name for name, value in terms.items() if not torch.isfinite(value).all()]
        for net in nets if gradients else []:
            if not _all_finite([p.grad for p in net.parameters() if p.grad is not None]):
                return [f'gradient of {unwrap(net).__class__.__name__}']
        return []

    def check(self, loss_dict, nets, current_iter, gradients=True):
        """Call after ``backward()`` and before ``optimizer.step()``, once per update.

        Args:
            loss_dict (dict[str, Tensor]): Loss terms of the update (named in the log when non-finite).
            nets (list[nn.Module]): Networks the update steps: their gradients are checked (and cleared when bad).
            current_iter (int): Iteration: updates with the same value belong to one iteration.
            gradients (bool): Check the gradients too (False: the loss terms only, e.g. while an fp16 GradScaler
                handles overflowing gradients).

        Returns:
            bool: True when the update may be taken (every loss term and gradient finite, on every rank).

        Raises:
            FloatingPointError: At the ``max_consecutive``-th bad iteration in a row.
            RuntimeError: A DDP-wrapped network (``find_unused_parameters: false``) has parameters without gradient.
        """
        for net in nets:
            check_ddp_gradients(net)
        bad = self._bad_terms(loss_dict, nets, gradients)
        if self.distributed and dist.is_available() and dist.is_initialized():
            # every rank must take the same decision, or the DDP replicas diverge (and the next collective hangs)
            nccl = dist.get_backend() == 'nccl'
            flag = torch.tensor([1.0 if bad else 0.0], device=torch.cuda.current_device() if nccl else 'cpu')
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if flag.item() > 0 and not bad:
                bad = ['values on another rank']
        if current_iter != self._iter:  # the first update of an iteration
            self._iter, self._before, self._iter_bad = current_iter, self.consecutive, False
        if not bad:
            if not self._iter_bad:
                self.consecutive = 0
            return True
        self._iter_bad = True
        self.consecutive = self._before + 1
        for net in nets:
            net.zero_grad(set_to_none=True)
        get_root_logger().warning(f'Iteration {current_iter}: non-finite {", ".join(bad)}; update skipped '
                                  f'({self.consecutive}/{self.max_consecutive} bad iterations in a row).')
        if self.consecutive >= self.max_consecutive:
            raise FloatingPointError(f'Training stopped at iteration {current_iter}: {self.consecutive} consecutive '
                                     f'iterations with non-finite {", ".join(bad)}. The last good checkpoint is kept '
                                     f'in {self.checkpoint_dir}; lower the learning rate or check the data.')
        return False
