import numpy as np
import os
from basicsr.utils import FileClient, get_root_logger
from basicsr.utils.registry import DATASET_REGISTRY
from os import path as osp
from torch.utils import data as data

from defocusgan_plugin.data.dp_transforms import crop, dp_augment, grid_scores, patch_grid, random_window, to_sample
from defocusgan_plugin.data.dpdd_cache import DPDDCache, scores_key
from defocusgan_plugin.utils.img_io import bit_depth_of, crop_then_float, decode_raw, is_image_file, raw_to_float

# DPDD folder of each key, relative to dataroot; '{split}' is train / val / test.
DPDD_FOLDERS = {
    'lq': '{split}_c/source',
    'gt': '{split}_c/target',
    'lq_l': '{split}_l/source',
    'lq_r': '{split}_r/source',
    'defocus': '{split}_defocus',
}
_FOLDER_OPTION = {
    'lq': 'dataroot_lq',
    'gt': 'dataroot_gt',
    'lq_l': 'dataroot_l',
    'lq_r': 'dataroot_r',
    'defocus': 'dataroot_defocus'
}


def list_folder(folder, key, option):
    """Sorted file names of a data folder (images, or .npy maps for 'defocus'); clear errors when absent/empty."""
    if not osp.isdir(folder):
        raise FileNotFoundError(f'Data folder for {key} not found: {folder} (option {option}).')
    if key == 'defocus':
        names = [f for f in os.listdir(folder) if f.endswith('.npy')]
    else:
        names = [f for f in os.listdir(folder) if is_image_file(f)]
    if not names:
        kind = '.npy defocus maps' if key == 'defocus' else 'images'
        raise ValueError(f'Data folder for {key} contains no {kind}: {folder} (option {option}).')
    return sorted(names)


def pair_files(folders):
    """Pairs the files of several folders: by file stem when the stems agree, else by sorted order.

    Args:
        folders (dict[str, str]): key -> folder; the first key is the reference.

    Returns:
        list[dict[str, str]]: One dict of full paths per sample.
    """
    names = {k: list_folder(f, k, _FOLDER_OPTION.get(k, k)) for k, f in folders.items()}
    ref_key = next(iter(folders))
    ref = names[ref_key]
    stems = {k: {osp.splitext(n)[0]: n for n in v} for k, v in names.items()}
    ref_stems = list(stems[ref_key])
    samples = []
    if all(set(s) == set(ref_stems) for s in stems.values()):
        for stem in ref_stems:
            samples.append({k: osp.join(folders[k], stems[k][stem]) for k in folders})
        return samples
    for key, key_names in names.items():
        if len(key_names) != len(ref):
            missing = [n for n in ref if osp.splitext(n)[0] not in stems[key]]
            extra = [n for n in key_names if osp.splitext(n)[0] not in stems[ref_key]]
            first = (f"'{missing[0]}' of {folders[ref_key]} has no match in {folders[key]}"
                     if missing else f"'{extra[0]}' of {folders[key]} has no match in {folders[ref_key]}")
            raise ValueError(f'Cannot pair {ref_key} and {key}: {len(ref)} files in {folders[ref_key]} but '
                             f'{len(key_names)} in {folders[key]}; first unmatched file: {first}.')
    get_root_logger().warning(f'File names differ between {", ".join(folders.values())}; pairing them by sorted '
                              'order.')
    for i in range(len(ref)):
        samples.append({k: osp.join(folders[k], names[k][i]) for k in folders})
    return samples


@DATASET_REGISTRY.register()
class DPDDDataset(data.Dataset):
    """Dual-pixel defocus deblurring data in the DPDD layout (Abuolaim & Brown, ECCV 2020).

    Layout under ``dataroot``: ``{split}_c/source`` (blurred, combined view), ``{split}_c/target`` (all-in-focus),
    ``{split}_l/source`` and ``{split}_r/source`` (DP views), and optionally ``{split}_defocus`` (``.npy`` signed CoC
    maps in pixels, written by ``scripts/make_synthetic_dpdd.py``). Files are read at full precision (8- or 16-bit,
    each normalised by its own bit depth) to float32 in [0, 1], RGB, CHW.

    Args:
        opt (dict): Config for the dataset. Keys:
            dataroot (str): DPDD root. Individual folders can be overridden with ``dataroot_lq`` (combined blurred),
                ``dataroot_gt``, ``dataroot_l``, ``dataroot_r``, ``dataroot_defocus``.
            split (str): train / val / test. Default: the phase (``train``, ``val`` or ``test``).
            input (str): 'single' -> ``lq`` is the combined image (3 ch); 'dual' -> ``lq`` is concat(L, R) (6 ch).
                Default: 'single'.
            color (str): 'rgb' (gray files are replicated) or 'gray' (colour files are converted; 1 channel).
            load_dp_views (bool): Also return ``lq_l``/``lq_r`` in single mode when the folders exist. Default: True.
            gt_size (int): Training patch size (train phase).
            use_hflip (bool): Random horizontal flips; DP views are swapped with the flip.
            use_vflip (bool): Random vertical flips.
            use_rot (bool): Random 90-degree rotations; an error with ``input: dual``. In single mode the DP views
                are then not returned (their disparity would be vertical).
            patch_stride (int): If set (train phase), the dataset enumerates a grid of ``gt_size`` patches with this
                stride instead of one random crop per image.
            drop_least_sharp (float): With ``patch_stride``, drop this fraction of patches with the lowest gradient
                energy of the target (common DPDD practice: 0.3). Default: 0.
            io_backend (dict): BasicSR file client options. Default: disk.
            cache_root (str): Folder written by ``scripts/cache_dpdd.py`` for this ``dataroot``: images are then
                memory-mapped crops of the decoded samples instead of full PNG decodes (same values, same patches
                and augmentation; the stored patch scores also skip the start-up pass of ``drop_least_sharp``). A
                missing, stale or corrupt cache is an error naming the file. Default: none (decode the files).

    Returns (per item):
        dict with ``lq``, ``gt``, ``lq_path``, ``gt_path``, and when available ``lq_l``, ``lq_r``, ``defocus``
        (1 x H x W, signed CoC in pixels; NaN where there is no ground truth) and, in dual mode, ``lq_c`` (the
        combined view).
    """

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        self.phase = opt.get('phase', 'test')
        self.input = opt.get('input', 'single')
        if self.input not in ('single', 'dual'):
            raise ValueError(f"Dataset option 'input' must be 'single' or 'dual', got {self.input!r}.")
        self.channels = {'rgb': 3, 'gray': 1}.get(opt.get('color', 'rgb'))
        if self.channels is None:
            raise ValueError(f"Dataset option 'color' must be 'rgb' or 'gray', got {opt.get('color')!r}.")
        self.use_rot = bool(opt.get('use_rot', False)) and self.phase == 'train'
        if self.use_rot and self.input == 'dual':
            raise ValueError("Dataset option use_rot: true is not allowed with input: dual (rotation breaks the "
                             'horizontal dual-pixel disparity).')
        self.io_backend_opt = dict(opt.get('io_backend', {'type': 'disk'}))
        self.file_client = None

        folders = self._resolve_folders()
        self.keys = list(folders)
        self.samples = pair_files(folders)
        self.cache = self._open_cache()
        self.patches = None
        if self.phase == 'train' and opt.get('patch_stride'):
            self.patches = self._make_patch_list()

    def _open_cache(self):
        """The decoded-image cache of option ``cache_root`` (None without it), checked against every sample."""
        cache_root = self.opt.get('cache_root')
        if not cache_root:
            return None
        if not self.opt.get('dataroot'):
            raise ValueError('Dataset option cache_root needs option dataroot (the cache mirrors the dataroot tree).')
        if self.io_backend_opt.get('type') != 'disk':
            raise ValueError(f"Dataset option cache_root reads from disk; io_backend type "
                             f"{self.io_backend_opt.get('type')!r} cannot be combined with it.")
        cache = DPDDCache(osp.expanduser(cache_root), osp.expanduser(self.opt['dataroot']))
        for sample in self.samples:
            for key, path in sample.items():
                if key != 'defocus':
                    cache.entry(path)
        return cache

    def _resolve_folders(self):
        opt = self.opt
        split = opt.get('split', self.phase)
        root = opt.get('dataroot')
        folders = {}
        for key, rel in DPDD_FOLDERS.items():
            explicit = opt.get(_FOLDER_OPTION[key])
            if explicit:
                folders[key] = osp.expanduser(explicit)
            elif root:
                folders[key] = osp.join(osp.expanduser(root), rel.format(split=split))
        if not folders:
            raise ValueError('DPDDDataset needs option dataroot (DPDD root folder) or dataroot_lq/dataroot_gt.')
        if root and not osp.isdir(osp.expanduser(root)):
            raise FileNotFoundError(f'DPDD dataroot not found: {root} (option dataroot).')
        required = ['gt'] + (['lq_l', 'lq_r'] if self.input == 'dual' else ['lq'])
        for key in required:
            if key not in folders:
                raise ValueError(f'DPDDDataset: no folder for {key}; set dataroot or {_FOLDER_OPTION[key]}.')
        want_views = self.input == 'dual' or (self.opt.get('load_dp_views', True) and not self.use_rot)
        keep = {}
        for key, folder in folders.items():
            explicit = bool(opt.get(_FOLDER_OPTION[key]))
            optional_key = key not in required and not explicit
            if key in ('lq_l', 'lq_r') and not want_views:
                continue
            if optional_key and not osp.isdir(folder):
                continue  # absent optional folders (DP views for single input, defocus maps) are skipped
            keep[key] = folder
        if ('lq_l' in keep) != ('lq_r' in keep):
            present = 'lq_l' if 'lq_l' in keep else 'lq_r'
            raise ValueError(f'Only one DP view folder found ({keep[present]}); need both left and right.')
        if 'lq' not in keep:  # dual mode without the combined folder: name samples after the left view
            keep = {'lq_l': keep.pop('lq_l'), **keep}
        else:
            keep = {'lq': keep.pop('lq'), **keep}
        return keep

    def __len__(self):
        return len(self.patches) if self.patches is not None else len(self.samples)

    # ------------------------------------------------------------------ reading
    def _load_raw(self, key, path):
        """One file's samples before normalisation: HWC in the file's dtype (a memory map with the cache); defocus
        maps (H x W, or C x H x W as multi-channel maps are saved) as validated float32 HWC."""
        if key == 'defocus':
            try:
                dmap = np.load(path).astype(np.float32)
            except Exception as err:
                raise ValueError(f'Cannot read defocus map {path}: {err}') from None
            if dmap.ndim == 2:
                dmap = dmap[None]
            # NaN marks pixels without ground truth (holes of depth-derived maps), as DPRawPixel4Dataset's maps;
            # the defocus-map metrics skip them. Infinities are still corrupt data.
            if dmap.ndim != 3 or np.isinf(dmap).any():
                raise ValueError(f'Defocus map must be an H x W or C x H x W array without infinities (NaN = no '
                                 f'ground truth), got shape {dmap.shape}: {path}')
            return np.ascontiguousarray(dmap.transpose(1, 2, 0))
        if self.cache is not None:
            return self.cache.open(path)
        if self.file_client is None:
            backend = dict(self.io_backend_opt)
            self.file_client = FileClient(backend.pop('type'), **backend)
        return decode_raw(self.file_client.get(path), path)

    def _read_raw(self, sample):
        raws = {key: self._load_raw(key, path) for key, path in sample.items()}
        ref_key = next(iter(sample))
        ref_shape = raws[ref_key].shape[:2]
        for key, arr in raws.items():
            if arr.shape[:2] != ref_shape:
                raise ValueError(f'Size mismatch in one sample: {sample[ref_key]} is {ref_shape[0]}x{ref_shape[1]} '
                                 f'but {sample[key]} is {arr.shape[0]}x{arr.shape[1]}.')
        return raws

    def _to_float(self, sample, raws, window=None):
        """Normalised float32 HWC arrays, cropped to ``window`` = (top, left, size) first where that is exact."""
        arrays = {}
        for key, raw in raws.items():
            if key == 'defocus':
                arrays[key] = raw if window is None else crop({key: raw}, *window)[key]
            elif window is None:
                arrays[key] = raw_to_float(raw, sample[key], self.channels)
            else:
                arrays[key] = crop_then_float(raw, *window, sample[key], self.channels)
        return arrays

    def _make_patch_list(self):
        size, stride = int(self.opt['gt_size']), int(self.opt['patch_stride'])
        drop = float(self.opt.get('drop_least_sharp', 0.0))
        key = scores_key(size, stride, self.channels)
        patches, scores, recomputed = [], [], 0
        for idx, sample in enumerate(self.samples):
            stored = None
            if self.cache is not None:
                entry = self.cache.entry(sample['gt'])
                (h, w), stored = entry['shape'][:2], entry.get('scores', {}).get(key)
            if stored is None:  # score the full image, as read for training
                gt = raw_to_float(self._load_raw('gt', sample['gt']), sample['gt'], self.channels)
                h, w = gt.shape[:2]
            if size > h or size > w:
                raise ValueError(f'gt_size {size} is larger than the image ({h}x{w}) of {sample["gt"]}.')
            grid = patch_grid(h, w, size, stride)
            if stored is None:
                stored, recomputed = grid_scores(gt, size, stride), recomputed + 1
            elif len(stored) != len(grid):
                raise ValueError(f'Corrupt DPDD cache entry for {sample["gt"]} (option cache_root): {len(stored)} '
                                 f'patch scores for a grid of {len(grid)}; re-run scripts/cache_dpdd.py.')
            patches += [(idx, top, left) for top, left in grid]
            scores += stored
        if self.cache is not None and recomputed:
            get_root_logger().info(f'DPDD cache {self.cache.cache_root} holds no patch scores for gt_size {size}, '
                                   f'patch_stride {stride}: scored {recomputed} images at start-up (scripts/'
                                   f'cache_dpdd.py --gt-size {size} --patch-stride {stride} stores them).')
        if drop > 0:
            keep = np.argsort(np.asarray(scores))[int(round(drop * len(patches))):]
            patches = [patches[i] for i in sorted(keep)]
        return patches

    # ------------------------------------------------------------------ items
    def __getitem__(self, index):
        if self.patches is not None:
            sample_idx, top, left = self.patches[index]
        else:
            sample_idx = index
        sample = self.samples[sample_idx]
        raws = self._read_raw(sample)
        window = None
        if self.phase == 'train':
            size = int(self.opt['gt_size']) if self.opt.get('gt_size') else None
            if self.patches is not None:
                window = (top, left, size)
            elif size:
                h, w = next(iter(raws.values())).shape[:2]
                window = (*random_window(h, w, size, sample.get('lq', sample['gt'])), size)
        arrays = self._to_float(sample, raws, window)
        if self.phase == 'train':
            arrays = dp_augment(arrays, self.opt.get('use_hflip', False), self.opt.get('use_vflip', False),
                                self.use_rot)
        out = to_sample(arrays, self.input)
        out['lq_path'] = sample.get('lq', sample.get('lq_l'))
        out['gt_path'] = sample['gt']
        out['bit_depth'] = bit_depth_of(raws['gt'])  # the files' sample depth, named in the metrics' protocol labels
        return out
