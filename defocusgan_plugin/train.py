"""Training entry point with BasicSR's flags, rooted at the current working directory.

    python -m defocusgan_plugin.train -opt options/train/train_defocusgan.yml [--auto_resume] [--debug]
    torchrun --nproc_per_node=2 -m defocusgan_plugin.train -opt X --launcher pytorch

Compared with ``basicsr/train.py`` it (1) writes ``experiments/``, ``tb_logger/`` under the working directory,
(2) initialises distributed training with gloo on CPU (nccl on GPU), (3) accepts ``--local-rank`` as well as
``--local_rank``, (4) resumes on CPU and exactly: the RNG states and the position inside the epoch are saved next to
each training state (``<iter>.loop``), so 4 iterations equal 2 + resume + 2 when ``num_worker_per_gpu`` is 0.
"""
import contextlib
import datetime
import logging
import math
import os
import sys
import time
import torch
from basicsr.data import build_dataloader, build_dataset
from basicsr.data.data_sampler import EnlargedSampler
from basicsr.data.prefetch_dataloader import CPUPrefetcher, CUDAPrefetcher
from basicsr.models import build_model
from basicsr.train import init_tb_loggers
from basicsr.utils import (AvgTimer, MessageLogger, check_resume, get_env_info, get_root_logger, get_time_str,
                           make_exp_dirs, mkdir_and_rename, scandir)
from basicsr.utils.options import copy_opt_file, dict2str
from os import path as osp

# Running this module imported the defocusgan_plugin package first: the torchvision alias and the registrations are
# in place before the basicsr imports above.
from defocusgan_plugin.models.robust_base_model import AMP_DTYPES, RobustBaseModel
from defocusgan_plugin.utils.checkpoint import gather_rng_states, load_checkpoint, save_object, set_rng_states
from defocusgan_plugin.utils.options import parse_options


class ResumableSampler(EnlargedSampler):
    """BasicSR's EnlargedSampler that can skip the batches already consumed in the epoch being resumed."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._skip = 0

    def skip_once(self, num_indices):
        self._skip = num_indices

    def __iter__(self):
        indices = list(super().__iter__())[self._skip:]
        self._skip = 0
        return iter(indices)


def create_train_val_dataloader(opt, logger):
    """Builds the train loader (with a resumable sampler) and the validation loaders."""
    train_loader = train_sampler = None
    val_loaders = []
    for phase, dataset_opt in opt['datasets'].items():
        if phase == 'train':
            enlarge = dataset_opt.get('dataset_enlarge_ratio', 1)
            train_set = build_dataset(dataset_opt)
            train_sampler = ResumableSampler(train_set, opt['world_size'], opt['rank'], enlarge)
            train_loader = build_dataloader(
                train_set,
                dataset_opt,
                num_gpu=opt['num_gpu'],
                dist=opt['dist'],
                sampler=train_sampler,
                seed=opt['manual_seed'])
            # BasicSR's train loader drops the last incomplete batch: count what it really yields
            iters_per_epoch = len(train_loader)
            if iters_per_epoch == 0:
                raise ValueError(f"datasets.train: {len(train_set)} images x dataset_enlarge_ratio {enlarge} make no "
                                 f"full batch of batch_size_per_gpu {dataset_opt['batch_size_per_gpu']} x "
                                 f"{opt['world_size']} processes; lower the batch size or raise the ratio.")
            total_iters = int(opt['train']['total_iter'])
            total_epochs = math.ceil(total_iters / iters_per_epoch)
            logger.info(f'Training statistics:\n\tNumber of train images: {len(train_set)}\n\tDataset enlarge ratio: '
                        f'{enlarge}\n\tBatch size per process: {dataset_opt["batch_size_per_gpu"]}\n\tWorld size: '
                        f'{opt["world_size"]}\n\tIterations per epoch: {iters_per_epoch}\n\tTotal epochs: '
                        f'{total_epochs}; iters: {total_iters}.')
        elif phase.split('_')[0] == 'val':
            val_set = build_dataset(dataset_opt)
            val_loaders.append(
                build_dataloader(
                    val_set,
                    dataset_opt,
                    num_gpu=opt['num_gpu'],
                    dist=opt['dist'],
                    sampler=None,
                    seed=opt['manual_seed']))
            logger.info(f'Number of val images/folders in {dataset_opt["name"]}: {len(val_set)}')
        else:
            raise ValueError(f"Dataset phase '{phase}' is not recognised: use train, val or val_<name>.")
    if train_loader is None:
        raise ValueError("Option datasets has no 'train' entry.")
    return train_loader, train_sampler, val_loaders, total_epochs, total_iters


def find_resume_state(opt):
    """Path of the training state to resume from (``--auto_resume``: the newest readable one), or None."""
    if not opt['auto_resume']:
        path = opt['path'].get('resume_state')
        if path and not osp.isfile(path):
            raise FileNotFoundError(f'Resume state not found: {path} (option path.resume_state).')
        return path
    state_dir = osp.join(opt['root_path'], 'experiments', opt['name'], 'training_states')
    if not osp.isdir(state_dir):
        return None
    states = sorted((int(v.split('.')[0]) for v in scandir(state_dir, suffix='.state') if v.split('.')[0].isdigit()),
                    reverse=True)
    for it in states:
        path = osp.join(state_dir, f'{it}.state')
        if all(
                osp.isfile(osp.join(opt['root_path'], 'experiments', opt['name'], 'models', f))
                for f in _network_files(opt, it)):
            opt['path']['resume_state'] = path
            return path
        print(f'Skipping training state {path}: its network files are missing.', flush=True)
    return None


def _network_files(opt, it):
    return [f"net_{k.replace('network_', '')}_{it}.pth" for k in opt if k.startswith('network_')]


def load_resume_state(opt):
    path = find_resume_state(opt)
    if path is None:
        return None
    state = load_checkpoint(path)
    check_resume(opt, state['iter'])
    loop_path = osp.splitext(path)[0] + '.loop'
    state['loop'] = load_checkpoint(loop_path) if osp.isfile(loop_path) else None
    return state


def save_loop_state(opt, epoch, current_iter, epoch_iter):
    """Saves what BasicSR's training state lacks for an exact resume: RNG states of every rank and the position
    inside the epoch. Collective in distributed runs (every rank must call it); rank 0 writes."""
    rng = gather_rng_states(opt)
    if opt['rank'] == 0:
        loop = {'epoch': epoch, 'iter': current_iter, 'epoch_iter': epoch_iter, 'rng': rng}
        save_object(loop, osp.join(opt['path']['training_states'], f'{current_iter}.loop'))


# BasicSR model -> the plugin model that trains the same way with every speed option
PLUGIN_EQUIVALENTS = {'SRModel': 'DPDeblurModel', 'SRGANModel': 'DefocusGANModel', 'ESRGANModel': 'DefocusGANModel'}


def basicsr_model_speed(model, opt):
    """Applies ``train.amp`` and ``train.channels_last`` to one of BasicSR's own models (the plugin's models apply
    the speed options themselves).

    BasicSR's ``optimize_parameters`` then runs whole under bf16 autocast (losses and backward included, with
    autocast's own fp32 list for the losses). What cannot work safely with an unmodified BasicSR model is refused:
    fp16 (no GradScaler: its fp16 gradients could underflow unnoticed) and ``compile`` (the compiled wrapper's
    ``_orig_mod.`` prefix would enter BasicSR's saved key names).

    Returns:
        callable: A context manager factory for ``optimize_parameters`` (autocast, or a no-op).
    """
    if isinstance(model, RobustBaseModel):
        return contextlib.nullcontext
    train_opt = opt.get('train') or {}
    amp, name = train_opt.get('amp') or False, type(model).__name__
    instead = PLUGIN_EQUIVALENTS.get(name, 'DPDeblurModel or DefocusGANModel')
    if amp is not False and amp not in AMP_DTYPES:
        raise ValueError(f'Option train.amp must be false, bf16 or fp16, got {amp!r}.')
    if amp == 'fp16':
        raise ValueError(f"Option train.amp: fp16 needs a GradScaler, which BasicSR's {name} does not use; use amp: "
                         f'bf16, or model_type: {instead} (the plugin model, which supports fp16).')
    if train_opt.get('compile'):
        raise ValueError(f"Option train.compile is not supported with BasicSR's {name} (its checkpoints would be saved "
                         f"under torch.compile's '_orig_mod.' key names); use model_type: {instead}.")
    channels_last = train_opt.get('channels_last', False)
    if not isinstance(channels_last, bool):
        raise ValueError(f'Option train.channels_last must be true or false, got {channels_last!r}.')
    if channels_last:  # the networks and the losses' networks (e.g. VGG), in place: the optimisers keep their params
        for value in list(vars(model).values()):
            if isinstance(value, torch.nn.Module):
                model.get_bare_model(value).to(memory_format=torch.channels_last)
    if amp or channels_last:
        get_root_logger().info(f"Speed options for BasicSR's {name}: amp {amp or 'off'} (optimize_parameters under "
                               f'autocast), channels_last {channels_last}.')
    if not amp:
        return contextlib.nullcontext
    device = model.device
    if device.type == 'cuda' and not torch.cuda.is_bf16_supported(including_emulation=False):
        raise ValueError(f'Option train.amp: bf16 needs a GPU with bfloat16 support (Ampere or newer); '
                         f'{torch.cuda.get_device_name(device)} has none.')
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


def train_pipeline(root_path, argv=None):
    opt, args = parse_options(root_path, is_train=True, argv=argv)
    opt['root_path'] = root_path
    torch.backends.cudnn.benchmark = True

    resume_state = load_resume_state(opt)
    if resume_state is None:
        make_exp_dirs(opt)
        if opt['logger'].get('use_tb_logger') and 'debug' not in opt['name'] and opt['rank'] == 0:
            mkdir_and_rename(osp.join(root_path, 'tb_logger', opt['name']))
    copy_opt_file(args.opt, opt['path']['experiments_root'])

    log_file = osp.join(opt['path']['log'], f"train_{opt['name']}_{get_time_str()}.log")
    logger = get_root_logger(logger_name='basicsr', log_level=logging.INFO, log_file=log_file)
    logger.info(get_env_info())
    logger.info(dict2str(opt))
    tb_logger = init_tb_loggers(opt)

    train_loader, train_sampler, val_loaders, total_epochs, total_iters = create_train_val_dataloader(opt, logger)
    model = build_model(opt)
    speed = basicsr_model_speed(model, opt)  # before resuming: the optimiser states load onto the converted params
    start_epoch, current_iter, epoch_iter, loop = 0, 0, 0, None
    if resume_state:
        model.resume_training(resume_state)
        start_epoch, current_iter = resume_state['epoch'], resume_state['iter']
        loop = resume_state.get('loop')
        if loop is not None:
            epoch_iter = loop['epoch_iter']
        logger.info(f'Resuming training from epoch: {start_epoch}, iter: {current_iter}' +
                    ('' if loop else ' (no .loop file: the epoch restarts and RNG states are not restored)'))

    msg_logger = MessageLogger(opt, current_iter, tb_logger)
    prefetch_mode = opt['datasets']['train'].get('prefetch_mode')
    if prefetch_mode is None or prefetch_mode == 'cpu':
        prefetcher = CPUPrefetcher(train_loader)
    elif prefetch_mode == 'cuda':
        if opt['datasets']['train'].get('pin_memory') is not True:
            raise ValueError('Set datasets.train.pin_memory: true for prefetch_mode: cuda.')
        prefetcher = CUDAPrefetcher(train_loader, opt)
    else:
        raise ValueError(f"datasets.train.prefetch_mode must be null, 'cpu' or 'cuda', got {prefetch_mode!r}.")

    batch = train_loader.batch_size
    logger.info(f'Start training from epoch: {start_epoch}, iter: {current_iter}')
    data_timer, iter_timer = AvgTimer(), AvgTimer()
    start_time = time.time()
    epoch = start_epoch
    for epoch in range(start_epoch, total_epochs + 1):
        train_sampler.set_epoch(epoch)
        if epoch_iter:
            train_sampler.skip_once(epoch_iter * batch)
        prefetcher.reset()  # creating the loader iterator draws from the torch RNG ...
        if loop is not None:  # ... so the saved RNG states are restored after it
            set_rng_states(loop['rng'], opt['rank'])
            loop = None
        train_data = prefetcher.next()
        while train_data is not None:
            data_timer.record()
            current_iter += 1
            epoch_iter += 1
            if current_iter > total_iters:
                break
            model.update_learning_rate(current_iter, warmup_iter=opt['train'].get('warmup_iter', -1))
            model.feed_data(train_data)
            with speed():
                model.optimize_parameters(current_iter)
            iter_timer.record()
            if current_iter == 1:
                msg_logger.reset_start_time()
            if current_iter % opt['logger']['print_freq'] == 0:
                log_vars = {'epoch': epoch, 'iter': current_iter, 'lrs': model.get_current_learning_rate()}
                log_vars.update({'time': iter_timer.get_avg_time(), 'data_time': data_timer.get_avg_time()})
                log_vars.update(model.get_current_log())
                msg_logger(log_vars)
            if current_iter % opt['logger']['save_checkpoint_freq'] == 0:
                logger.info('Saving models and training states.')
                # the .loop first: a kill in between leaves a .loop without its .state, which resume ignores,
                # instead of a .state without its .loop (an inexact resume)
                save_loop_state(opt, epoch, current_iter, epoch_iter)
                model.save(epoch, current_iter)
            if opt.get('val') is not None and current_iter % opt['val']['val_freq'] == 0:
                for val_loader in val_loaders:
                    model.validation(val_loader, current_iter, tb_logger, opt['val']['save_img'])
            data_timer.start()
            iter_timer.start()
            train_data = prefetcher.next()
        epoch_iter = 0
        if current_iter > total_iters:
            break

    logger.info(f'End of training. Time consumed: {datetime.timedelta(seconds=int(time.time() - start_time))}')
    logger.info('Save the latest model.')
    model.save(epoch=-1, current_iter=-1)  # -1: 'latest'
    if opt.get('val') is not None:
        for val_loader in val_loaders:
            model.validation(val_loader, current_iter, tb_logger, opt['val']['save_img'])
    if tb_logger:
        tb_logger.close()
    return model


def main(argv=None):
    train_pipeline(os.getcwd(), argv)


if __name__ == '__main__':
    sys.exit(main())
