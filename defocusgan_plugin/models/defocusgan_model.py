"""DefocusGANModel: defocus-map-guided GAN training of a single-image deblurring generator."""
import math
import torch
from collections import OrderedDict
from os import path as osp
from basicsr.archs import build_network
from basicsr.models.srgan_model import SRGANModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY

from defocusgan_plugin.losses.defocus_adversarial_loss import DefocusAdversarialLoss
from defocusgan_plugin.metrics.lpips_metric import ALEXNET_ENV, ALEXNET_FILE
from defocusgan_plugin.models.dp_base_model import DPBaseModel
from defocusgan_plugin.utils.pretrained import resolve_weights
from defocusgan_plugin.utils.registry_util import unknown_type_message

MAP_SOURCES = ('gt', 'folder', 'network')
_GAUSS_END = math.exp(-4.0)
ANNEAL_SCHEDULES = {
    # the official release's exp(-(2t/T)^2), rescaled so that it reaches 0 exactly at T (it ends at 0.018 there)
    'gaussian': lambda t: (math.exp(-(2.0 * t)**2) - _GAUSS_END) / (1.0 - _GAUSS_END),
    'cosine': lambda t: 0.5 * (1.0 + math.cos(math.pi * t)),
    'linear': lambda t: 1.0 - t,
}


def guidance_weight(step, anneal_iters, schedule='gaussian'):
    """Guidance weight w of the defocus masks after ``step`` generator updates.

    Args:
        step (int): Generator updates done so far.
        anneal_iters (int): Updates over which w goes from 1 to 0 (paper: 2e4); 0 disables guidance.
        schedule (str): 'gaussian' (official release), 'cosine' or 'linear'.

    Returns:
        float: 1 at step 0, decreasing, 0 from ``anneal_iters`` on.
    """
    if schedule not in ANNEAL_SCHEDULES:
        raise ValueError(f'Unknown guidance schedule {schedule!r} (option train.guidance.schedule); use one of '
                         f'{", ".join(ANNEAL_SCHEDULES)}.')
    if anneal_iters <= 0 or step >= anneal_iters:
        return 0.0
    return min(1.0, max(0.0, ANNEAL_SCHEDULES[schedule](max(step, 0) / anneal_iters)))


@MODEL_REGISTRY.register()
class DefocusGANModel(SRGANModel, DPBaseModel):
    """DefocusGAN training: L1 + perceptual + defocus adversarial (WGAN-GP) losses, annealed defocus-map guidance.

    The class order gives BasicSR's GAN code (SRGANModel: networks, losses, optimisers, EMA, validation, saving) on
    top of :class:`DPBaseModel` (CPU/GPU DDP, safe checkpoints, resumable extra state, NaN guard).

    Options beyond SRGANModel's (all under ``train``):

    * ``defocus_map: {source: gt | folder | network, ...}`` - the map used for the guidance masks and the adversarial
      weighting. ``gt``: the dataset's ``defocus`` key (synthetic data, or DPDD-layout ``{split}_defocus`` maps);
      ``folder``: the same key from ``datasets.train.dataroot_defocus`` (precomputed ``.npy`` maps); ``network``:
      computed on the fly from the DP views (``lq_l``, ``lq_r``) by a frozen stage-1 network given as
      ``network: {type: DefocusMapNet, ...}`` and ``pretrain: <net_map_<iter>.pth>`` (``param_key``, default
      'params'). Leave the block out to train without a map (plain WGAN-GP, no guidance).
    * ``guidance: {anneal_iters: 20000, schedule: gaussian}`` - the weight w goes from 1 to 0 over ``anneal_iters``
      generator updates (see :func:`guidance_weight`); the count is saved with the training state.
    * ``gan_start_iter`` - until this iteration the generator is trained with the content losses only and the
      critic is idle; from then on, as SRGANModel (``net_d_iters``, ``net_d_init_iters`` counted from it).

    Generators without map input (``accepts_defocus_map`` not set, e.g. BasicSR's RCAN) are trained without
    guidance; the map still weights the adversarial loss. Validation and testing never pass a map.
    """

    def init_training_settings(self):
        train_opt = self.opt['train']
        if not train_opt.get('gan_opt'):
            raise KeyError('DefocusGANModel needs option train.gan_opt (e.g. type: DefocusAdversarialLoss).')
        if not isinstance(self.opt.get('network_d'), dict):
            raise KeyError('DefocusGANModel needs an option block network_d (e.g. type: PatchGANDiscriminator).')
        self.gan_start_iter = int(train_opt.get('gan_start_iter', 0))
        guide_opt = train_opt.get('guidance') or {}
        anneal_iters = guide_opt.get('anneal_iters', 20000)
        try:  # YAML gives 2e4 as a string and 2.0e4 as a float: accept any whole number
            number = float(anneal_iters)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number) or number < 0 or not number.is_integer():
            raise ValueError('Option train.guidance.anneal_iters must be a whole number >= 0 (generator updates; 0 '
                             f'disables the guidance), got {anneal_iters!r}.')
        self.anneal_iters = int(number)
        self.anneal_schedule = guide_opt.get('schedule', 'gaussian')
        guidance_weight(0, self.anneal_iters, self.anneal_schedule)  # validates the schedule name now
        self.anneal_step = 0
        self.map_guided = bool(getattr(self.get_bare_model(self.net_g), 'accepts_defocus_map', False))
        self._setup_defocus_map(train_opt.get('defocus_map'))
        for name, metric in ((self.opt.get('val') or {}).get('metrics') or {}).items():
            if metric.get('type') == 'calculate_lpips':  # fail now, not at the first validation hours later
                resolve_weights(metric.get('alexnet_path'), ALEXNET_ENV, ALEXNET_FILE,
                                f'val.metrics.{name}.alexnet_path')
        super().init_training_settings()

        logger = get_root_logger()
        if self.map_guided and self.map_source is None:
            logger.warning('network_g accepts defocus-map guidance but train.defocus_map is not set: training '
                           'without guidance.')
        logger.info(f'DefocusGAN: defocus map source {self.map_source}; guidance '
                    f'{"on" if self.map_guided and self.map_source else "off"} (anneal_iters {self.anneal_iters}, '
                    f'{self.anneal_schedule}); adversarial loss from iteration {self.gan_start_iter + 1}.')

    def _setup_defocus_map(self, map_opt):
        self.map_source, self.net_map = None, None
        if not map_opt or map_opt.get('source') in (None, 'none'):
            return
        source = map_opt['source']
        if source not in MAP_SOURCES:
            raise ValueError(f'Unknown train.defocus_map.source {source!r}; use one of {", ".join(MAP_SOURCES)} '
                             '(or leave the block out).')
        self.map_source = source
        if source == 'folder' and not (self.opt['datasets'].get('train') or {}).get('dataroot_defocus'):
            raise KeyError("train.defocus_map.source is 'folder': set datasets.train.dataroot_defocus to the folder of "
                           'precomputed .npy defocus maps.')
        if source != 'network':
            return
        net_opt, path = map_opt.get('network'), map_opt.get('pretrain')
        if not isinstance(net_opt, dict) or 'type' not in net_opt:
            raise KeyError("train.defocus_map.source is 'network': set train.defocus_map.network with a 'type' "
                           '(e.g. DefocusMapNet) and its arguments.')
        if net_opt['type'] not in ARCH_REGISTRY:
            raise KeyError(unknown_type_message('train.defocus_map.network', net_opt['type'], ARCH_REGISTRY))
        if not path:
            raise KeyError("train.defocus_map.source is 'network': set train.defocus_map.pretrain to the stage-1 "
                           'checkpoint (net_map_<iter>.pth).')
        if not osp.isfile(osp.expanduser(path)):
            raise FileNotFoundError(f'train.defocus_map.pretrain points to a missing file: {path} (the stage-1 '
                                    'checkpoint net_map_<iter>.pth written by DefocusMapModel).')
        self.net_map = build_network(net_opt).to(self.device)
        self.load_network(self.net_map, osp.expanduser(path), strict=True, param_key=map_opt.get('param_key', 'params'))
        self.net_map.eval().requires_grad_(False)

    # ------------------------------------------------------------------ data and map
    def feed_data(self, data):
        super().feed_data(data)
        self.map_inputs = {k: data[k] for k in ('defocus', 'lq_l', 'lq_r') if k in data}  # moved when needed

    def defocus_map(self):
        """Defocus map of the current training batch from the configured source, on the model's device.

        Returns:
            Tensor | None: (B, C, H, W) signed CoC in pixels, or None when no source is configured.
        """
        if self.map_source is None:
            return None
        if self.map_source == 'network':
            if 'lq_l' not in self.map_inputs or 'lq_r' not in self.map_inputs:
                raise KeyError("train.defocus_map.source is 'network' but the training batch has no DP views (lq_l, "
                               'lq_r): the dataset needs {split}_l / {split}_r folders and load_dp_views: true.')
            views = torch.cat([self.map_inputs['lq_l'], self.map_inputs['lq_r']], dim=1).to(self.device)
            with torch.no_grad():
                dmap = self.net_map(views)
        else:
            if 'defocus' not in self.map_inputs:
                where = ('datasets.train.dataroot_defocus' if self.map_source == 'folder' else
                         'a dataset with GT maps (SyntheticDPDataset, or {split}_defocus/*.npy in the DPDD layout)')
                raise KeyError(f"train.defocus_map.source is '{self.map_source}' but the training batch has no "
                               f"'defocus' key; use {where}.")
            dmap = self.map_inputs['defocus'].to(self.device)
        if dmap.dim() != 4 or dmap.shape[0] != self.lq.shape[0] or dmap.shape[-2:] != self.lq.shape[-2:]:
            raise ValueError(f'Defocus map of shape {tuple(dmap.shape)} does not match the batch '
                             f'{tuple(self.lq.shape)} (source {self.map_source}).')
        return dmap

    def current_guidance(self):
        """Guidance weight w for the next generator update (0 when the generator or the data has no map)."""
        if not (self.map_guided and self.map_source):
            return 0.0
        return guidance_weight(self.anneal_step, self.anneal_iters, self.anneal_schedule)

    # ------------------------------------------------------------------ training
    def _gan_loss(self, pred, target_is_real, is_disc, defocus):
        if isinstance(self.cri_gan, DefocusAdversarialLoss):
            return self.cri_gan(pred, target_is_real, is_disc=is_disc, defocus=defocus)
        return self.cri_gan(pred, target_is_real, is_disc=is_disc)  # BasicSR's GANLoss

    def optimize_parameters(self, current_iter):
        gan_on = current_iter > self.gan_start_iter
        gan_iter = current_iter - self.gan_start_iter
        step_g = not gan_on or (gan_iter % self.net_d_iters == 0 and gan_iter > self.net_d_init_iters)
        weight = self.current_guidance()
        weighted_adv = gan_on and isinstance(self.cri_gan, DefocusAdversarialLoss)
        defocus = self.defocus_map() if (weight > 0 or weighted_adv) else None
        loss_dict = OrderedDict()
        nets = []

        # generator
        for p in self.net_d.parameters():
            p.requires_grad = False
        self.optimizer_g.zero_grad()
        with torch.set_grad_enabled(step_g):
            self.output = self.net_g(self.lq, defocus, weight) if weight > 0 else self.net_g(self.lq)
        if step_g:
            l_g_total = 0
            if self.cri_pix:
                loss_dict['l_g_pix'] = self.cri_pix(self.output, self.gt)
                l_g_total += loss_dict['l_g_pix']
            if self.cri_perceptual:
                l_percep, l_style = self.cri_perceptual(self.output, self.gt)
                for name, value in (('l_g_percep', l_percep), ('l_g_style', l_style)):
                    if value is not None:
                        loss_dict[name] = value
                        l_g_total += value
            if gan_on:
                loss_dict['l_g_gan'] = self._gan_loss(self.net_d(self.output), True, False, defocus)
                l_g_total += loss_dict['l_g_gan']
            l_g_total.backward()
            nets.append(self.net_g)

        # critic
        if gan_on:
            for p in self.net_d.parameters():
                p.requires_grad = True
            self.optimizer_d.zero_grad()
            fake = self.output.detach()
            real_pred, fake_pred = self.net_d(self.gt), self.net_d(fake)
            loss_dict['l_d_real'] = self._gan_loss(real_pred, True, True, defocus)
            loss_dict['l_d_fake'] = self._gan_loss(fake_pred, False, True, defocus)
            l_d_total = loss_dict['l_d_real'] + loss_dict['l_d_fake']
            if isinstance(self.cri_gan, DefocusAdversarialLoss):
                loss_dict['l_d_gp'] = self.cri_gan.gradient_penalty(self.net_d, self.gt, fake)
                l_d_total = l_d_total + loss_dict['l_d_gp']
            loss_dict['out_d_real'] = real_pred.detach().mean()
            loss_dict['out_d_fake'] = fake_pred.detach().mean()
            l_d_total.backward()
            nets.append(self.net_d)

        # one finiteness check for both networks: a bad step skips both, so the NaN guard counts iterations
        if self.step_is_finite(loss_dict, nets, current_iter):
            if step_g:
                self.optimizer_g.step()
                self.anneal_step += 1
            if gan_on:
                self.optimizer_d.step()
        loss_dict['guidance'] = torch.tensor(weight, device=self.device)
        self.log_dict = self.reduce_loss_dict(loss_dict)
        # _bad_steps > 0: step_is_finite skipped this step; net_g is unchanged, so the EMA must not move towards it
        if self.ema_decay > 0 and self._bad_steps == 0:
            self.model_ema(decay=self.ema_decay)

    # ------------------------------------------------------------------ resume
    def extra_training_state(self):
        return {'anneal_step': self.anneal_step}

    def load_extra_training_state(self, state):
        self.anneal_step = int(state.get('anneal_step', 0))
        get_root_logger().info(f'Resumed guidance annealing at step {self.anneal_step} '
                               f'(w = {self.current_guidance():.4f}).')
