import torch
from basicsr.utils import imwrite, tensor2img
from basicsr.utils.registry import MODEL_REGISTRY
from os import path as osp

from defocusgan_plugin.models.defocus_map_model import DefocusMapModel
from defocusgan_plugin.ops.deconv import deconv_layered, deconv_occlusion, occlusion_layers
from defocusgan_plugin.ops.filters import guided_filter, guided_filter_options

MAP_SOURCES = ('network', 'gt')
DATA_VIEWS = ('combined', 'dp')  # what the deconvolution fits: the combined view, or both DP views
# options of each deconvolution method
METHOD_PARAMS = {
    'wiener': ('reg', ),
    'rl': ('iterations', 'eps'),
    'occlusion': ('reg', 'iterations', 'tol', 'exponent', 'reweight', 'eps')
}


@MODEL_REGISTRY.register()
class DefocusDeconvModel(DefocusMapModel):
    """Deblurring by non-blind, spatially varying deconvolution with the stage-1 map and learned kernels (test only).

    The "defocus map + deconvolution" baseline of DefocusGAN's Table 3: the trained ``network_map`` estimates the CoC
    map from the DP views, and the blurred combined image is deconvolved with the ``network_kernel`` kernels, one
    deconvolution per integer radius blended by the map (:func:`defocusgan_plugin.ops.deconv.deconv_layered`).
    Load both with ``path.pretrain_network_map`` / ``path.pretrain_network_kernel``.

    Options (``deconv`` block):
        method (str): 'wiener' (gradient-regularised Wiener) or 'rl' (Richardson-Lucy), both per-pixel models (each
            pixel blurred by the kernel of its own radius); or 'occlusion' (ours, not the paper's baseline): the
            layered occlusion model of the renderer solved by conjugate gradients
            (:func:`defocusgan_plugin.ops.deconv.deconv_occlusion`; needs the map's sign for the depth order).
            Default: 'wiener'.
        reg (float): Prior weight (Wiener, occlusion). iterations (int): RL / CG iterations. tol, exponent, reweight,
            eps: the occlusion solver's CG stop and gradient prior (``exponent`` 2: quadratic, as the Wiener filter's;
            below 1: hyper-Laplacian, as Krishnan and Fergus, the paper's deconvolution, solved by ``reweight`` IRLS
            passes).
        map_source (str): 'network' (default) or 'gt' - the dataset's ``defocus`` maps, an oracle upper bound.
        map_filter (dict | None): Ours, off by default: a guided filter (``radius``, ``eps``) of the network's map
            before the deconvolution, with the blurred image as guide. It pulls the map's depth edges, which a DP
            matching window blurs, onto the image's edges: the deconvolution rings where the two disagree. None: the
            map as estimated. GT maps (``map_source: gt``) are used as they are.
        views (str): Ours, 'combined' by default: what the 'occlusion' method fits. 'combined' fits the blurred
            combined view with the full-aperture kernels (the paper's input); 'dp' fits both DP views, each with its
            half of the kernel bank (``LearnableBlurKernel.dp_kernels``). The half apertures' spectra have their zeros
            in other places than the full aperture's, so two views pin down frequencies their mean has lost.

    Validation/test writes the deblurred image (``<name>_<suffix>.png``) and the colour-mapped map; image metrics
    (``val.metrics``: PSNR/SSIM/MAE...) compare the deblurred image with ``gt``, the defocus-map metrics compare maps.
    """

    def __init__(self, opt):
        if opt['is_train']:
            raise ValueError('DefocusDeconvModel has no training: train DefocusMapModel, then test this model with '
                             'path.pretrain_network_map and path.pretrain_network_kernel.')
        super().__init__(opt)
        # an option set to ~ (None) is unset: a file's method options can be cleared when --force_yml switches method
        self.deconv_opt = {k: v for k, v in (opt.get('deconv') or {}).items() if v is not None}
        self.map_source = self.deconv_opt.pop('map_source', 'network')
        if self.map_source not in MAP_SOURCES:
            raise ValueError(f"deconv.map_source must be one of {MAP_SOURCES}, got {self.map_source!r}.")
        self.map_filter = guided_filter_options(self.deconv_opt.pop('map_filter', None), 'deconv.map_filter')
        self.method = self.deconv_opt.pop('method', 'wiener')
        if self.method not in METHOD_PARAMS:
            raise ValueError(f'deconv.method must be one of {tuple(METHOD_PARAMS)}, got {self.method!r}.')
        self.data_views = self.deconv_opt.pop('views', 'combined')
        if self.data_views not in DATA_VIEWS or (self.data_views == 'dp' and self.method != 'occlusion'):
            raise ValueError(f"deconv.views must be one of {DATA_VIEWS} ('dp' with method 'occlusion' only); got "
                             f'{self.data_views!r} with method {self.method!r}.')
        unknown = sorted(set(self.deconv_opt) - set(METHOD_PARAMS[self.method]))
        if unknown:
            raise ValueError(f"deconv: unknown option(s) {unknown} for method '{self.method}'; it takes "
                             f'{METHOD_PARAMS[self.method]}.')

    def test(self):
        if self.blurred is None:
            raise KeyError('DefocusDeconvModel needs the blurred combined image (lq, or lq_c with input: dual).')
        self.net_map.eval()
        with torch.no_grad():
            if self.map_source == 'gt':
                if self.gt_map is None:
                    raise KeyError("deconv.map_source is 'gt' but the dataset gives no defocus maps.")
                self.output = self.gt_map
            else:
                self.output = self.net_map(self.lq)
                if self.map_filter:
                    self.output = guided_filter(self.blurred, self.output, **self.map_filter)
            self.reblurred = None  # the map model's reblur is not needed here
            kernels, start = self.net_kernel(), int(self.kernel_module.radii()[0])  # signed sets start at -R
            if self.method == 'occlusion':
                if self.data_views == 'dp':  # the left/right kernels of the signed radii, back (far) layer first
                    data, radii = self.views, self.kernel_module.signed_radii().flip(0)
                    layer_kernels = self.kernel_module.dp_kernels(kernels).flip(1)
                else:
                    data, (radii, layer_kernels) = self.blurred, occlusion_layers(kernels, start)
                self.result = deconv_occlusion(
                    data,
                    self.output,
                    layer_kernels,
                    radii,
                    linear_light=self.kernel_module.linear_light,
                    **self.deconv_opt)
            else:
                self.result = deconv_layered(
                    self.blurred,
                    self.output,
                    kernels,
                    self.method,
                    linear_light=self.kernel_module.linear_light,
                    start=start,
                    **self.deconv_opt)
        self.net_map.train()

    def metric_inputs(self):
        return None if self.gt is None else (self.result, self.gt)

    def default_metrics(self):
        return {}

    visual_keys = ('result', 'blurred', 'gt', 'gt_map')

    def save_visuals(self, img_name, tag, folder):
        imwrite(tensor2img(self.result.cpu()), osp.join(folder, f'{img_name}_{tag}.png'))
        super().save_visuals(img_name, tag, folder)
