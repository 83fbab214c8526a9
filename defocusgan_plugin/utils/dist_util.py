"""Distributed set-up that works on CPU (gloo) as well as GPU (nccl).

BasicSR's ``init_dist`` hard-codes nccl and calls ``torch.cuda.set_device``, so CPU processes fail there. Here the
backend is the ``dist_params: {backend: ...}`` option, else nccl when CUDA is available and gloo otherwise.
"""
import os
import subprocess
import torch
import torch.distributed as dist


def default_backend(backend=None):
    """``backend`` if given, else nccl with CUDA and gloo without."""
    return backend or ('nccl' if torch.cuda.is_available() else 'gloo')


def init_dist(launcher, backend=None, port=None, **kwargs):
    """Initialises the default process group from the launcher's environment.

    Args:
        launcher (str): 'pytorch' (torchrun / torch.distributed.launch: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT,
            LOCAL_RANK) or 'slurm' (srun: SLURM_* variables).
        backend (str | None): 'nccl', 'gloo', ... None: see :func:`default_backend`.
        port (int | None): Master port for slurm (else MASTER_PORT, else 29500).
        **kwargs: Passed to ``torch.distributed.init_process_group``.
    """
    backend = default_backend(backend)
    if launcher == 'slurm':
        proc_id, ntasks = int(os.environ['SLURM_PROCID']), int(os.environ['SLURM_NTASKS'])
        node_list = os.environ['SLURM_NODELIST']
        os.environ.setdefault('MASTER_ADDR', subprocess.getoutput(f'scontrol show hostname {node_list} | head -n1'))
        os.environ['MASTER_PORT'] = str(port or os.environ.get('MASTER_PORT', 29500))
        os.environ['WORLD_SIZE'], os.environ['RANK'] = str(ntasks), str(proc_id)
        num_gpus = max(torch.cuda.device_count(), 1)
        os.environ.setdefault('LOCAL_RANK', str(proc_id % num_gpus))
    elif launcher != 'pytorch':
        raise ValueError(f"Invalid launcher '{launcher}'; use 'pytorch' or 'slurm'.")
    for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        if key not in os.environ:
            raise RuntimeError(f'--launcher {launcher} needs the environment variable {key}; start the job with '
                               'torchrun (e.g. torchrun --nproc_per_node=2 -m defocusgan_plugin.train -opt X '
                               '--launcher pytorch).')
    if backend == 'nccl':
        if not torch.cuda.is_available():
            raise RuntimeError('Distributed backend nccl needs CUDA; use gloo on CPU (option dist_params: '
                               '{backend: gloo}).')
        local_rank = int(os.environ.get('LOCAL_RANK', int(os.environ['RANK']) % torch.cuda.device_count()))
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, **kwargs)


def patch_basicsr_init_dist():
    """Makes BasicSR's own ``parse_options`` (``basicsr/train.py --launcher pytorch``) start gloo on CPU.

    ``basicsr.utils.options`` calls its imported ``init_dist(launcher)``, which hard-codes nccl and
    ``torch.cuda.set_device``; this rebinds that name to :func:`init_dist` (same signature, nccl whenever CUDA is
    there, so GPU runs behave as before). BasicSR's files are not modified.
    """
    import basicsr.utils.options as basicsr_options
    basicsr_options.init_dist = init_dist


def model_device(opt):
    """The device a model of these options should live on (the local GPU of this rank, or CPU)."""
    if opt.get('num_gpu', 0) == 0 or not torch.cuda.is_available():
        return torch.device('cpu')
    return torch.device('cuda', torch.cuda.current_device())
