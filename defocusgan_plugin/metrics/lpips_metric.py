"""LPIPS (v0.1) as a BasicSR metric with the AlexNet, SqueezeNet or VGG16 backbone, from local weights.

The linear calibration layers ship with the ``lpips`` package; the backbone ("trunk") needs torchvision's ImageNet
weights, which cannot be downloaded here. Give them per backbone with a metric option or an environment variable:

* ``net: alex``: ``alexnet-owt-7be5be79.pth``, option ``alexnet_path`` or ``$DEFOCUSGAN_ALEXNET_WEIGHTS``;
* ``net: squeeze``: ``squeezenet1_1-b8a52dc0.pth``, option ``squeezenet_path`` or ``$DEFOCUSGAN_SQUEEZENET_WEIGHTS``;
* ``net: vgg``: ``vgg16-397923af.pth``, option ``vgg16_path`` or ``$DEFOCUSGAN_VGG16_WEIGHTS``.

torchvision's cache (``$TORCH_HOME/hub/checkpoints``) and ``experiments/pretrained_models`` are searched too. Values
differ between backbones (the DefocusGAN release reports SqueezeNet LPIPS, most DPDD papers AlexNet): compare
numbers of one backbone only. The network is built once per (backbone, weights, device) and cached.
"""
import torch
from basicsr.utils.registry import METRIC_REGISTRY

from defocusgan_plugin.metrics.dpdd_metric import to_unit_range
from defocusgan_plugin.utils.checkpoint import state_dict_mismatches
from defocusgan_plugin.utils.pretrained import load_state_dict, resolve_weights

# net -> (torchvision file, metric option, environment variable, torchvision model name)
BACKBONES = {
    'alex': ('alexnet-owt-7be5be79.pth', 'alexnet_path', 'DEFOCUSGAN_ALEXNET_WEIGHTS', 'alexnet'),
    'squeeze': ('squeezenet1_1-b8a52dc0.pth', 'squeezenet_path', 'DEFOCUSGAN_SQUEEZENET_WEIGHTS', 'squeezenet1_1'),
    'vgg': ('vgg16-397923af.pth', 'vgg16_path', 'DEFOCUSGAN_VGG16_WEIGHTS', 'vgg16'),
}
ALEXNET_FILE, _, ALEXNET_ENV, _ = BACKBONES['alex']
_CACHE = {}


def _backbone(net, option_key='net'):
    if net not in BACKBONES:
        raise ValueError(f"LPIPS option {option_key} must be one of {', '.join(BACKBONES)}, got {net!r}.")
    return BACKBONES[net]


def lpips_weights_option(net, paths, prefix=''):
    """Resolves the trunk weights of one backbone from the per-backbone path options.

    Args:
        net (str): 'alex', 'squeeze' or 'vgg'.
        paths (dict): Metric options; only ``alexnet_path`` / ``squeezenet_path`` / ``vgg16_path`` are read.
        prefix (str): Shown before the option names in errors (e.g. ``val.metrics.lpips.``).

    Returns:
        str: The weight file.
    """
    filename, key, env, _ = _backbone(net, f'{prefix}net')
    for other, (_, other_key, _, _) in BACKBONES.items():
        if other != net and paths.get(other_key):
            raise ValueError(f"LPIPS option {prefix}{other_key} is set but {prefix}net is {net!r}: set "
                             f"{prefix}{key} for the {net} backbone (or net: {other}).")
    return resolve_weights(paths.get(key), env, filename, f'{prefix}{key}' if prefix else f'{key} (metric option)')


def check_lpips_weights(metric_opt, key):
    """Checks an LPIPS metric block before a long run (backbone name and trunk weights); raises a clear error.

    Args:
        metric_opt (dict): The block ``val.metrics.<key>`` (``type: calculate_lpips``).
        key (str): Its name under ``val.metrics``, for the error message.

    Returns:
        str: The weight file that validation will load.
    """
    return lpips_weights_option(metric_opt.get('net', 'alex'), metric_opt, f'val.metrics.{key}.')


def build_lpips(weights_path=None, device='cpu', net='alex'):
    """Returns a cached ``lpips.LPIPS(net=net)`` whose trunk is loaded from local torchvision weights.

    Args:
        weights_path (str | None): The torchvision weight file of the backbone (None: environment variable, caches).
        device (str | torch.device): Where the network runs.
        net (str): 'alex', 'squeeze' or 'vgg'.

    Returns:
        lpips.LPIPS: In eval mode.
    """
    import lpips
    import warnings
    filename, key_name, env, arch = _backbone(net)
    path = resolve_weights(weights_path, env, filename, f'{key_name} (metric option)')
    key = (net, path, str(device))
    if key not in _CACHE:
        with warnings.catch_warnings():  # lpips passes torchvision's deprecated 'pretrained' argument
            warnings.simplefilter('ignore')
            model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)  # linear layers: package
        features = {k[len('features.'):]: v for k, v in load_state_dict(path).items() if k.startswith('features.')}
        # lpips keeps torchvision's layer indices (features.<idx>...) as module names inside its slices
        trunk = {}
        for slice_name, block in model.net.named_children():
            for idx, _ in block.named_children():
                trunk.update({f'{slice_name}.{k}': v for k, v in features.items() if k.split('.')[0] == idx})
        problems = state_dict_mismatches(model.net.state_dict(), trunk)
        if not features or problems:
            raise ValueError(f"{path} is not torchvision's {arch} ({filename}), needed by LPIPS with net {net!r}: " +
                             ('no "features.*" weights' if not features else '; '.join(problems)) + '.')
        model.net.load_state_dict(trunk, strict=True)
        _CACHE[key] = model.eval().to(device)
    return _CACHE[key]


def _to_lpips_tensor(img, input_order, crop_border, device):
    arr = to_unit_range(img, input_order, crop_border)  # HWC [0, 1]
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[2] == 1:
        arr = arr.repeat(3, axis=2)
    if not torch.is_tensor(img):
        arr = arr[..., ::-1]  # arrays follow BasicSR's BGR order; tensors are RGB
    t = torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float().to(device)
    return t * 2.0 - 1.0


@METRIC_REGISTRY.register()
def calculate_lpips(img,
                    img2,
                    crop_border=0,
                    input_order='HWC',
                    net='alex',
                    alexnet_path=None,
                    squeezenet_path=None,
                    vgg16_path=None,
                    device=None,
                    **kwargs):
    """LPIPS distance (v0.1), inputs scaled to [-1, 1]; lower is better.

    Args:
        img, img2 (ndarray | Tensor): uint8 / uint16 / float images (arrays BGR HWC as BasicSR passes them).
        crop_border (int): Pixels cropped from each edge. Default: 0.
        input_order (str): 'HWC' or 'CHW'. Default: 'HWC'.
        net (str): Backbone: 'alex' (default; most DPDD papers), 'squeeze' (the DefocusGAN release) or 'vgg'.
        alexnet_path, squeezenet_path, vgg16_path (str): Local torchvision weights of the backbone in use (else its
            environment variable and the caches, see the module docstring); a path of another backbone is an error.
        device (str): Torch device. Default: CUDA if available.

    Returns:
        float: LPIPS.
    """
    path = lpips_weights_option(net,
                                dict(alexnet_path=alexnet_path, squeezenet_path=squeezenet_path, vgg16_path=vgg16_path))
    device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
    model = build_lpips(path, device, net)
    a = _to_lpips_tensor(img, input_order, crop_border, device)
    b = _to_lpips_tensor(img2, input_order, crop_border, device)
    if a.shape != b.shape:
        raise ValueError(f'Image shapes are different: {tuple(a.shape)}, {tuple(b.shape)}.')
    with torch.no_grad():
        return float(model(a, b).mean())
