"""LPIPS (AlexNet) as a BasicSR metric, with offline weights.

The linear calibration layers ship with the ``lpips`` package; the AlexNet trunk needs torchvision's ImageNet
weights (``alexnet-owt-7be5be79.pth``), which cannot be downloaded here: give them with the metric option
``alexnet_path`` or the environment variable ``DEFOCUSGAN_ALEXNET_WEIGHTS``. The network is built once per
(weights, device) and cached.
"""
import torch
from basicsr.utils.registry import METRIC_REGISTRY

from defocusgan_plugin.metrics.dpdd_metric import to_unit_range
from defocusgan_plugin.utils.pretrained import load_state_dict, resolve_weights

ALEXNET_FILE = 'alexnet-owt-7be5be79.pth'
ALEXNET_ENV = 'DEFOCUSGAN_ALEXNET_WEIGHTS'
_CACHE = {}


def build_lpips(alexnet_path=None, device='cpu'):
    """Returns a cached ``lpips.LPIPS(net='alex')`` whose trunk is loaded from the local AlexNet weights."""
    import warnings
    import lpips
    path = resolve_weights(alexnet_path, ALEXNET_ENV, ALEXNET_FILE, 'alexnet_path (metric option)')
    key = (path, str(device))
    if key not in _CACHE:
        with warnings.catch_warnings():  # lpips passes torchvision's deprecated 'pretrained' argument
            warnings.simplefilter('ignore')
            model = lpips.LPIPS(net='alex', pretrained=True, pnet_rand=True, verbose=False)
        features = {k[len('features.'):]: v for k, v in load_state_dict(path).items() if k.startswith('features.')}
        if not features:
            raise ValueError(f'{path} holds no AlexNet "features.*" weights (expected torchvision\'s {ALEXNET_FILE}).')
        # lpips keeps torchvision's layer indices as module names inside its five slices
        trunk = {}
        for slice_name, block in model.net.named_children():
            for idx, _ in block.named_children():
                for p in ('weight', 'bias'):
                    if f'{idx}.{p}' in features:
                        trunk[f'{slice_name}.{idx}.{p}'] = features[f'{idx}.{p}']
        model.net.load_state_dict(trunk, strict=True)
        _CACHE[key] = model.eval().to(device)
    return _CACHE[key]


def _to_lpips_tensor(img, input_order, crop_border, device):
    arr = to_unit_range(img, input_order, crop_border)  # HWC [0, 1]
    if arr.shape[2] == 1:
        arr = arr.repeat(3, axis=2)
    if not torch.is_tensor(img):
        arr = arr[..., ::-1]  # arrays follow BasicSR's BGR order; tensors are RGB
    t = torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float().to(device)
    return t * 2.0 - 1.0


@METRIC_REGISTRY.register()
def calculate_lpips(img, img2, crop_border=0, input_order='HWC', alexnet_path=None, device=None, **kwargs):
    """LPIPS distance (AlexNet, v0.1), inputs scaled to [-1, 1]; lower is better.

    Args:
        img, img2 (ndarray | Tensor): uint8 / uint16 / float images (arrays BGR HWC as BasicSR passes them).
        crop_border (int): Pixels cropped from each edge. Default: 0.
        input_order (str): 'HWC' or 'CHW'. Default: 'HWC'.
        alexnet_path (str): Local torchvision AlexNet weights (else ``$DEFOCUSGAN_ALEXNET_WEIGHTS`` and caches).
        device (str): Torch device. Default: CUDA if available.

    Returns:
        float: LPIPS.
    """
    device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
    model = build_lpips(alexnet_path, device)
    a = _to_lpips_tensor(img, input_order, crop_border, device)
    b = _to_lpips_tensor(img2, input_order, crop_border, device)
    if a.shape != b.shape:
        raise ValueError(f'Image shapes are different: {tuple(a.shape)}, {tuple(b.shape)}.')
    with torch.no_grad():
        return float(model(a, b).mean())
