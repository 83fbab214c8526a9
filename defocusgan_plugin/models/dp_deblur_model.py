"""Deblurring model with several pixel-space losses (e.g. Charbonnier + MS-SSIM for MCCNet)."""
import contextlib
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY
from collections import OrderedDict

from defocusgan_plugin.models.robust_base_model import RobustBaseModel

# train.<key> -> name in the training log; each block is optional, at least one is needed
LOSS_BLOCKS = (('pixel_opt', 'l_pix'), ('ssim_opt', 'l_ssim'), ('perceptual_opt', 'l_percep'))


@MODEL_REGISTRY.register()
class DPDeblurModel(RobustBaseModel, SRModel):
    """BasicSR's SRModel with the plugin's safety (RobustBaseModel) and a structural loss next to the pixel loss.

    Everything else is SRModel's: ``network_g`` gets ``lq`` (with ``input: dual`` the 6-channel concat(L, R)),
    ``pretrain_network_g`` / ``strict_load_g`` / ``param_key_g``, optional EMA (``train.ema_decay``), validation with
    ``val.metrics`` and ``val.save_img``. From RobustBaseModel: CPU/GPU DDP, atomic checkpoints, strict safe loading and
    the NaN guard (a step with a non-finite loss or gradient is skipped).

    Losses (``train`` options, each optional, at least one required; the total is their sum):
        pixel_opt: e.g. ``CharbonnierLoss`` or ``L1Loss`` (logged as l_pix).
        ssim_opt: e.g. ``MSSSIMLoss`` (logged as l_ssim).
        perceptual_opt: a loss returning ``(perceptual, style)`` like BasicSR's ``PerceptualLoss`` (l_percep,
            l_style), or a plain tensor.

    Speed options (:class:`RobustBaseModel`): with ``train.amp`` the generator and the perceptual loss run under
    autocast, the pixel and MS-SSIM losses in fp32; ``train.compile`` compiles the generator.
    """

    def init_training_settings(self):
        self.net_g.train()
        train_opt = self.opt['train']
        self.ema_decay = train_opt.get('ema_decay', 0)
        if self.ema_decay > 0:
            get_root_logger().info(f'Use Exponential Moving Average with decay: {self.ema_decay}')
            self.net_g_ema = self.place(build_network(self.opt['network_g']))
            if self.opt['path'].get('pretrain_network_g') is not None:
                self.load_network(self.net_g_ema, self.opt['path']['pretrain_network_g'],
                                  self.opt['path'].get('strict_load_g', True), 'params_ema')
            else:
                self.model_ema(0)  # start from net_g's weights
            self.net_g_ema.eval()

        self.losses = OrderedDict(
            (name, build_loss(train_opt[key]).to(self.device)) for key, name in LOSS_BLOCKS if train_opt.get(key))
        if not self.losses:
            raise ValueError('DPDeblurModel needs at least one loss: set train.pixel_opt, train.ssim_opt or '
                             'train.perceptual_opt.')
        self.setup_optimizers()
        self.setup_schedulers()
        self.net_g = self.compile_network(self.net_g)

    def optimize_parameters(self, current_iter):
        self.optimizer_g.zero_grad()
        with self.autocast():
            output = self.net_g(self.lq)
        self.output = output.float()  # the losses see fp32 (a no-op without AMP)
        loss_dict = OrderedDict()
        for name, criterion in self.losses.items():
            # only the perceptual loss (a network) under autocast: the pixel and MS-SSIM losses in fp32 (MS-SSIM's
            # variance terms lose too much in half precision)
            with self.autocast() if name == 'l_percep' else contextlib.nullcontext():
                value = criterion(self.output, self.gt)
            if isinstance(value, tuple):  # (perceptual, style); either may be None
                for sub_name, sub_value in zip((name, 'l_style'), value):
                    if sub_value is not None:
                        loss_dict[sub_name] = sub_value.float()
            else:
                loss_dict[name] = value.float()
        self.backward(sum(loss_dict.values()))
        if self.guarded_step(loss_dict, [(self.net_g, self.optimizer_g)], current_iter) and self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)
        self.log_dict = self.reduce_loss_dict(loss_dict)
