"""DefocusGANModel: defocus-map-guided GAN training of a single-image deblurring generator."""
import math
import torch
from basicsr.archs import build_network
from basicsr.models.srgan_model import SRGANModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY
from collections import OrderedDict
from os import path as osp

from defocusgan_plugin.losses.defocus_adversarial_loss import DefocusAdversarialLoss
from defocusgan_plugin.models.robust_base_model import RobustBaseModel
from defocusgan_plugin.utils.registry_util import unknown_type_message

MAP_SOURCES = ('gt', 'folder', 'network')
_GAUSS_END = math.exp(-4.0)
ANNEAL_SCHEDULES = {
    # the official release: w = exp(-(2t/T)^2) while t < T (it is 0.018 just before T), then the masks are dropped
    'gaussian': lambda t: math.exp(-(2.0 * t)**2),
    # the same curve rescaled to reach 0 exactly at T (this plugin's earlier default)
    'gaussian_rescaled': lambda t: (math.exp(-(2.0 * t)**2) - _GAUSS_END) / (1.0 - _GAUSS_END),
    'cosine': lambda t: 0.5 * (1.0 + math.cos(math.pi * t)),
    'linear': lambda t: 1.0 - t,
}


def guidance_weight(step, anneal_iters, schedule='gaussian'):
    """Guidance weight w of the defocus masks at annealing step ``step``.

    Args:
        step (int): Annealing steps counted so far (generator updates after ``train.guidance.anneal_start_iter``).
        anneal_iters (int): Steps T over which w goes from 1 to 0 (paper: 2e4); 0 disables guidance.
        schedule (str): 'gaussian' (the release's ``exp(-(2t/T)^2)``), 'gaussian_rescaled', 'cosine' or 'linear'.

    Returns:
        float: 1 at step 0, decreasing, 0 from ``anneal_iters`` on (masks dropped).
    """
    if schedule not in ANNEAL_SCHEDULES:
        raise ValueError(f'Unknown guidance schedule {schedule!r} (option train.guidance.schedule); use one of '
                         f'{", ".join(ANNEAL_SCHEDULES)}.')
    if anneal_iters <= 0 or step >= anneal_iters:
        return 0.0
    return min(1.0, max(0.0, ANNEAL_SCHEDULES[schedule](max(step, 0) / anneal_iters)))


def _whole_number(value, key, minimum=0):
    """An option that must be a whole number (YAML gives 2e4 as a string and 2.0e4 as a float)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number < minimum or not number.is_integer():
        raise ValueError(f'Option {key} must be a whole number >= {minimum}, got {value!r}.')
    return int(number)


@MODEL_REGISTRY.register()
class DefocusGANModel(RobustBaseModel, SRGANModel):
    """DefocusGAN training: L1 + perceptual + defocus adversarial (WGAN-GP) losses, annealed defocus-map guidance.

    SRGANModel gives the networks, losses, optimisers, EMA, validation and saving; :class:`RobustBaseModel` the
    CPU/GPU DDP, safe checkpoints, resumable extra state and NaN guard.

    Options beyond SRGANModel's (all under ``train``):

    * ``defocus_map: {source: gt | folder | network, ...}`` - the map used for the guidance masks and the adversarial
      weighting. ``gt``: the dataset's ``defocus`` key (synthetic data, or DPDD-layout ``{split}_defocus`` maps);
      ``folder``: the same key from ``datasets.train.dataroot_defocus`` (precomputed ``.npy`` maps); ``network``:
      computed on the fly from the DP views (``lq_l``, ``lq_r``) by a frozen stage-1 network given as
      ``network: {type: DefocusMapNet, ...}`` and ``pretrain: <net_map_<iter>.pth>`` (``param_key``, default
      'params'). Leave the block out to train without a map (plain WGAN-GP, no guidance).
    * ``guidance: {anneal_iters: 20000, schedule: gaussian, anneal_start_iter: 0}`` - the mask weight w goes from 1
      to 0 over ``anneal_iters`` annealing steps (:func:`guidance_weight`); a step is counted per generator update
      after iteration ``anneal_start_iter`` only (the release: from epoch 10, w = 1 before). The count is saved with
      the training state.
    * ``critic_start_iter`` - the critic trains after this iteration, ``critic_steps`` updates per iteration (the
      release: 2, both on the same detached generated batch). Default: ``gan_start_iter``.
    * ``gan_start_iter`` - the generator's adversarial term is added after this iteration (the release: epoch 11,
      five epochs after its critic starts). SRGANModel's ``net_d_iters`` / ``net_d_init_iters`` count from
      ``critic_start_iter``.
    * ``critic_first`` - order within an iteration. True (release; DeblurGAN's loop, whose critic the release uses):
      generator forward, the critic updates on the detached output, then the generator's losses - its adversarial
      term scored by the updated critic - and its update. False: the generator is updated first, scored by the critic
      before its updates (this plugin's earlier order). Default: True.

    Generators without map input (``accepts_defocus_map`` not set, e.g. BasicSR's RCAN) are trained without
    guidance; the map still weights the adversarial loss. Validation and testing never pass a map.

    Speed options (:class:`RobustBaseModel`): with ``train.amp`` the generator, the stage-1 map network, the
    perceptual network and the critic's scores run under autocast, while the L1 loss and the WGAN-GP penalty (a
    double backward) are computed in fp32; ``train.compile`` compiles the generator, never the critic.
    ``train.nan_max_consecutive`` counts iterations with a skipped update, whatever their number of updates.
    """

    def init_training_settings(self):
        train_opt = self.opt['train']
        if not train_opt.get('gan_opt'):
            raise KeyError('DefocusGANModel needs option train.gan_opt (e.g. type: DefocusAdversarialLoss).')
        if not isinstance(self.opt.get('network_d'), dict):
            raise KeyError('DefocusGANModel needs an option block network_d (e.g. type: PatchGANDiscriminator).')
        self.gan_start_iter = _whole_number(train_opt.get('gan_start_iter', 0), 'train.gan_start_iter')
        self.critic_start_iter = _whole_number(
            train_opt.get('critic_start_iter', self.gan_start_iter), 'train.critic_start_iter')
        self.critic_steps = _whole_number(train_opt.get('critic_steps', 2), 'train.critic_steps', minimum=1)
        self.critic_first = bool(train_opt.get('critic_first', True))
        guide_opt = train_opt.get('guidance') or {}
        self.anneal_iters = _whole_number(guide_opt.get('anneal_iters', 20000), 'train.guidance.anneal_iters')
        self.anneal_start_iter = _whole_number(
            guide_opt.get('anneal_start_iter', 0), 'train.guidance.anneal_start_iter')
        self.anneal_schedule = guide_opt.get('schedule', 'gaussian')
        guidance_weight(0, self.anneal_iters, self.anneal_schedule)  # validates the schedule name now
        self.anneal_step = 0
        self.map_guided = bool(getattr(self.get_bare_model(self.net_g), 'accepts_defocus_map', False))
        self._setup_defocus_map(train_opt.get('defocus_map'))
        super().init_training_settings()
        if self.ema_decay > 0:
            self.net_g_ema = self.place(self.net_g_ema)
        self.net_g = self.compile_network(self.net_g)  # the critic never: its gradient penalty needs a double backward

        logger = get_root_logger()
        if self.map_guided and self.map_source is None:
            logger.warning('network_g accepts defocus-map guidance but train.defocus_map is not set: training '
                           'without guidance.')
        logger.info(f'DefocusGAN: defocus map source {self.map_source}; guidance '
                    f'{"on" if self.map_guided and self.map_source else "off"} (anneal_iters {self.anneal_iters}, '
                    f'{self.anneal_schedule}, counted after iteration {self.anneal_start_iter}); critic from '
                    f'iteration {self.critic_start_iter + 1} ({self.critic_steps} updates per iteration, '
                    f'{"before" if self.critic_first else "after"} the generator\'s); generator adversarial term '
                    f'from iteration {self.gan_start_iter + 1}.')

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
        self.net_map = self.place(build_network(net_opt))
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
            with torch.no_grad(), self.autocast():  # frozen, no gradient: autocast too; the map is used in fp32
                dmap = self.net_map(views).float()
        else:
            if 'defocus' not in self.map_inputs:
                where = ('datasets.train.dataroot_defocus' if self.map_source == 'folder' else
                         'a dataset with GT maps (SyntheticDPDataset, or {split}_defocus/*.npy in the DPDD layout)')
                raise KeyError(f"train.defocus_map.source is '{self.map_source}' but the training batch has no "
                               f"'defocus' key; use {where}.")
            # NaN marks pixels without ground truth (depth-derived maps have holes): treated as in focus there,
            # i.e. no mask guidance and no extra adversarial weight
            dmap = torch.nan_to_num(self.map_inputs['defocus'].to(self.device), nan=0.0)
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
        gan_on = current_iter > self.gan_start_iter  # the generator's adversarial term
        critic_on = current_iter > self.critic_start_iter
        critic_iter = current_iter - self.critic_start_iter
        step_g = not critic_on or (critic_iter % self.net_d_iters == 0 and critic_iter > self.net_d_init_iters)
        weight = self.current_guidance()
        map_adv = isinstance(self.cri_gan, DefocusAdversarialLoss) and (
            (critic_on and self.cri_gan.uses_map(is_disc=True)) or (gan_on and self.cri_gan.uses_map(is_disc=False)))
        defocus = self.defocus_map() if (weight > 0 or map_adv) else None
        loss_dict = OrderedDict()

        with torch.set_grad_enabled(step_g), self.autocast():
            output = self.net_g(self.lq, defocus, weight) if weight > 0 else self.net_g(self.lq)
        self.output = output.float()  # the losses see fp32 (a no-op without AMP)
        critic = (self.net_d, self.optimizer_d)
        critic_updates = self.critic_steps if critic_on else 0
        if self.critic_first:
            for _ in range(critic_updates):
                self.guarded_step(self._critic_backward(defocus, loss_dict), [critic], current_iter)
            critic_updates = 0
        # generator-first order: the generator's update and the first critic update are checked together (a bad value
        # in either skips both)
        terms, pairs = OrderedDict(), []
        if step_g:
            terms.update(self._generator_backward(defocus, gan_on, loss_dict))
            pairs.append((self.net_g, self.optimizer_g))
        if critic_updates:
            terms.update(self._critic_backward(defocus, loss_dict))
            pairs.append(critic)
        g_stepped = step_g and self.guarded_step(terms, pairs, current_iter)
        for _ in range(critic_updates - 1):
            self.guarded_step(self._critic_backward(defocus, loss_dict), [critic], current_iter)

        if g_stepped and current_iter > self.anneal_start_iter:
            self.anneal_step += 1
        loss_dict['guidance'] = torch.tensor(weight, device=self.device)
        self.log_dict = self.reduce_loss_dict(loss_dict)
        # a skipped generator step leaves net_g unchanged, so the EMA must not move towards it
        if self.ema_decay > 0 and g_stepped:
            self.model_ema(decay=self.ema_decay)

    def _generator_backward(self, defocus, gan_on, loss_dict):
        """Backward of the content (+ adversarial) losses of ``self.output``; returns the loss terms.

        The pixel loss is computed in fp32; the perceptual network and the critic run under ``train.amp``'s autocast
        and their losses are cast to fp32.
        """
        for p in self.net_d.parameters():
            p.requires_grad = False
        self.optimizer_g.zero_grad()
        terms = OrderedDict()
        if self.cri_pix:
            terms['l_g_pix'] = self.cri_pix(self.output, self.gt)
        if self.cri_perceptual:
            with self.autocast():
                l_percep, l_style = self.cri_perceptual(self.output, self.gt)
            for name, value in (('l_g_percep', l_percep), ('l_g_style', l_style)):
                if value is not None:
                    terms[name] = value.float()
        if gan_on:
            with self.autocast():
                pred = self.net_d(self.output)
            terms['l_g_gan'] = self._gan_loss(pred.float(), True, False, defocus)
        self.backward(sum(terms.values()))
        loss_dict.update(terms)
        return terms

    def _critic_backward(self, defocus, loss_dict):
        """Backward of the critic loss on the detached generator output (the same batch for every update)."""
        for p in self.net_d.parameters():
            p.requires_grad = True
        self.optimizer_d.zero_grad()
        fake = self.output.detach()
        with self.autocast():
            real_pred, fake_pred = self.net_d(self.gt), self.net_d(fake)
        real_pred, fake_pred = real_pred.float(), fake_pred.float()
        terms = OrderedDict()
        terms['l_d_real'] = self._gan_loss(real_pred, True, True, defocus)
        terms['l_d_fake'] = self._gan_loss(fake_pred, False, True, defocus)
        if isinstance(self.cri_gan, DefocusAdversarialLoss):
            # WGAN-GP in fp32 (autocast off): its double backward (autograd.grad with create_graph) would otherwise run
            # through the half-precision convolutions recorded by an autocast forward, (|grad| - 1)^2 near its minimum
            # needs fp32's precision, and with fp16 the unscaled inner gradient could underflow.
            with torch.autocast(self.device.type, enabled=False):
                terms['l_d_gp'] = self.cri_gan.gradient_penalty(self.net_d, self.gt, fake)
        self.backward(sum(terms.values()))
        loss_dict.update(terms, out_d_real=real_pred.detach().mean(), out_d_fake=fake_pred.detach().mean())
        return terms

    # ------------------------------------------------------------------ resume
    def extra_training_state(self):
        return {'anneal_step': self.anneal_step}

    def load_extra_training_state(self, state):
        self.anneal_step = int(state.get('anneal_step', 0))
        get_root_logger().info(f'Resumed guidance annealing at step {self.anneal_step} '
                               f'(w = {self.current_guidance():.4f}).')
