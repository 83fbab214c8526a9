import math
import numpy as np
from basicsr.utils.registry import DATASET_REGISTRY
from os import path as osp
from torch.utils import data as data

from defocusgan_plugin.data.dp_synthesis import (DEFAULT_PSF, embedded_scenes, procedural_inverse_depth, sample_coc,
                                                 synthesize_dp)
from defocusgan_plugin.data.dp_transforms import dp_augment, to_sample
from defocusgan_plugin.data.dpdd_dataset import list_folder
from defocusgan_plugin.utils.img_io import read_image


@DATASET_REGISTRY.register()
class SyntheticDPDataset(data.Dataset):
    """Dual-pixel triples rendered on the fly from sharp images and depth (no download needed).

    Each item draws a scene, a crop, a focal plane and an aperture, renders the left/right views and the combined
    image with DP PSFs (:mod:`defocusgan_plugin.data.dp_synthesis`) and returns the same keys as
    :class:`DPDDDataset`, plus the ground-truth signed CoC map. Item ``i`` is deterministic given ``seed``
    (training additionally mixes in the epoch through the worker seed, via Python's ``random``).

    Args:
        opt (dict): Config for the dataset. Keys:
            source (str): 'embedded' (scikit-image scenes, default) or 'folder'.
            dataroot_gt (str): Folder of sharp images (source 'folder').
            dataroot_depth (str): Optional folder of ``.npy`` inverse-depth maps named like the images (larger =
                nearer); missing ones get a procedural depth.
            max_side (int): Downscale sources so the longer side is at most this. Default: 384.
            gt_size (int): Side of the rendered square patch. Default: 128.
            coc_max (float): Largest |CoC| in pixels. Default: 8.
            num_samples (int): Virtual dataset length. Default: 1000 (train), 8 (val/test).
            seed (int): Base seed. Default: 0.
            input (str): 'single' or 'dual' (see DPDDDataset).
            psf (dict): DP PSF options. Default: Butterworth order 3, cut-off 2.5, beta 0.1, sigma 0.5, linear ramp.
            noise (list[float]): (shot, read) noise in linear light. Default: [1e-4, 1e-3].
            use_hflip, use_vflip (bool): DP-aware flips (train phase).
    """

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        self.phase = opt.get('phase', 'test')
        self.input = opt.get('input', 'single')
        if self.input not in ('single', 'dual'):
            raise ValueError(f"Dataset option 'input' must be 'single' or 'dual', got {self.input!r}.")
        self.gt_size = int(opt.get('gt_size', 128))
        self.coc_max = float(opt.get('coc_max', 8.0))
        if self.coc_max <= 0:
            raise ValueError(f'Dataset option coc_max must be positive, got {self.coc_max}.')
        self.num_samples = int(opt.get('num_samples', 1000 if self.phase == 'train' else 8))
        self.seed = int(opt.get('seed', 0))
        self.psf = dict(DEFAULT_PSF, **opt.get('psf', {}))
        self.noise = tuple(opt.get('noise', (1e-4, 1e-3)))
        self.scenes = self._load_scenes()
        for scene in self.scenes:
            h, w = scene['image'].shape[:2]
            if min(h, w) < self.gt_size:
                raise ValueError(f"gt_size {self.gt_size} is larger than scene '{scene['name']}' ({h}x{w}); lower "
                                 'gt_size or raise max_side.')

    def _load_scenes(self):
        source = self.opt.get('source', 'embedded')
        max_side = self.opt.get('max_side', 384)
        if source == 'embedded':
            return embedded_scenes(max_side=max_side, seed=self.seed)
        if source != 'folder':
            raise ValueError(f"Dataset option source must be 'embedded' or 'folder', got {source!r}.")
        folder = self.opt.get('dataroot_gt')
        if not folder:
            raise ValueError('SyntheticDPDataset with source: folder needs option dataroot_gt.')
        depth_folder = self.opt.get('dataroot_depth')
        rng = np.random.default_rng(self.seed)
        scenes = []
        for name in list_folder(folder, 'gt', 'dataroot_gt'):
            path = osp.join(folder, name)
            bgr, _ = read_image(path)
            img = np.ascontiguousarray(bgr[..., ::-1])
            scale = 1.0 if max_side is None else min(1.0, max_side / max(img.shape[:2]))
            if scale < 1:
                import cv2
                img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            inv = None
            depth_path = osp.join(depth_folder, osp.splitext(name)[0] + '.npy') if depth_folder else None
            if depth_path and osp.isfile(depth_path):
                import cv2
                inv = np.load(depth_path).astype(np.float32)
                inv = cv2.resize(inv, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
            scenes.append(
                dict(
                    name=osp.splitext(name)[0],
                    image=img,
                    depth='real' if inv is not None else 'procedural',
                    inv_depth=inv if inv is not None else procedural_inverse_depth(img, rng)))
        return scenes

    def __len__(self):
        return self.num_samples

    def __getitem__(self, index):
        # Train items vary with the worker's RNG (seeded by BasicSR per worker); val/test items are fixed.
        if self.phase == 'train':
            import random
            rng = np.random.default_rng([self.seed, index, random.getrandbits(32)])
        else:
            rng = np.random.default_rng([self.seed, index])
        scene = self.scenes[index % len(self.scenes)]
        h, w = scene['image'].shape[:2]
        size = self.gt_size
        margin = min(math.ceil(self.coc_max) + 2, (h - size) // 2, (w - size) // 2)  # context for the blur
        top = int(rng.integers(margin, h - size - margin + 1))
        left = int(rng.integers(margin, w - size - margin + 1))
        window = (slice(top - margin, top + size + margin), slice(left - margin, left + size + margin))
        coc = sample_coc(scene['inv_depth'][window], rng, self.coc_max)
        views = synthesize_dp(scene['image'][window], coc, rng, self.psf, noise=self.noise)
        inner = (slice(margin, margin + size), slice(margin, margin + size))
        # RGB -> BGR: the arrays then look like files read by cv2 (BasicSR's convention)
        arrays = {
            'lq': views['combined'][inner][..., ::-1],
            'lq_l': views['left'][inner][..., ::-1],
            'lq_r': views['right'][inner][..., ::-1],
            'gt': views['target'][inner][..., ::-1],
            'defocus': views['coc'][inner][..., None],
        }
        if self.phase == 'train':
            arrays = dp_augment(arrays, self.opt.get('use_hflip', False), self.opt.get('use_vflip', False))
        out = to_sample(arrays, self.input)
        name = f"{scene['name']}_{index:05d}"
        out['lq_path'] = out['gt_path'] = f'synthetic/{name}.png'
        out['bit_depth'] = 32  # rendered in float, never quantised (the metrics' protocol labels say 'float data')
        return out
