"""Photo-based DP data: whole photos per split, the manifest, the PSF families and today's set unchanged."""
import cv2
import json
import numpy as np
import os
import pytest
import torch

from defocusgan_plugin.data.dp_synthesis import (draw_image_formation, parse_psf_mix, split_photos, synthesize_dp,
                                                 write_photo_dpdd, write_synthetic_dpdd)
from defocusgan_plugin.ops import dp_psf


def _photos(root, num):
    rng = np.random.default_rng(0)
    os.makedirs(root)
    for i in range(num):
        img = cv2.resize(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8), (96, 72), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(os.path.join(root, f'p{i}.png'), img)
    with open(os.path.join(root, 'manifest.json'), 'w') as f:
        json.dump([dict(file=f'p{i}.png', licence='CC0-1.0') for i in range(num)], f)


def test_photo_split_is_disjoint_and_listed(tmp_path, one_thread):
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "mk", os.path.join(os.path.dirname(__file__), "..", "scripts", "make_synthetic_dpdd.py"))
    mk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mk)
    read_licences = mk.read_licences
    root = str(tmp_path / 'photos')
    _photos(root, 5)
    out = str(tmp_path / 'out')
    counts = write_photo_dpdd(
        out, [root],
        crop=(32, 48),
        crops_per_photo=(2, 1, 1),
        focus_per_crop=(1, 1, 2),
        num_val=1,
        num_test=1,
        coc_max=3.0,
        psf_mix=parse_psf_mix('all'),
        licences=read_licences([root]),
        log=lambda *_: None)
    assert counts == dict(train=6, val=1, test=2)
    manifest = json.load(open(os.path.join(out, 'manifest.json')))
    by_split = {}
    for record in manifest['photos']:
        assert record['licence'] == 'CC0-1.0'
        by_split.setdefault(record['split'], set()).add(record['key'])
        for image in record['images']:  # every image of a photo lies in that photo's split only
            assert os.path.isfile(os.path.join(out, f"{record['split']}_c/source", image['name'] + '.png'))
    assert sum(len(v) for v in by_split.values()) == 5 and len(set.union(*by_split.values())) == 5
    names = {s: set(os.listdir(os.path.join(out, f'{s}_c/target'))) for s in ('train', 'val', 'test')}
    assert not (names['train'] & names['val']) and not (names['train'] & names['test'])


def test_split_refuses_too_few_photos():
    with pytest.raises(ValueError, match='--val-photos'):
        split_photos(['a', 'b'], 1, 1)


def test_psf_mix_parsing_and_families():
    assert parse_psf_mix('none') is None
    mix = parse_psf_mix('soft_disk:2,apodised,noise')
    assert mix['shapes'] == {'soft_disk': 2.0, 'apodised': 1.0} and mix['modifiers'] == {'noise'}
    with pytest.raises(ValueError, match="unknown family 'gauss'"):
        parse_psf_mix('gauss')
    rng = np.random.default_rng(1)
    families = {draw_image_formation(rng, parse_psf_mix('all'))['family'] for _ in range(30)}
    assert families == {'butterworth', 'soft_disk', 'apodised'}
    radii = torch.tensor([4.0])
    hard, soft, apod = (dp_psf(radii, 15, profile=p, **kw).sum(0)[0]
                        for p, kw in (('disk', {}), ('soft_disk', dict(edge=3.0)), ('apodised', dict(falloff=0.8))))
    assert soft[7, 7 + 5] > hard[7, 7 + 5] == 0  # the soft rim reaches past the hard disk
    assert apod[7, 7] > hard[7, 7] > apod[7, 10]  # apodised: brighter centre, darker rim


def test_vignetting_makes_views_unequal():
    img = np.full((16, 24, 3), 0.5, np.float32)
    coc = np.full((16, 24), 2.0, np.float32)
    even = synthesize_dp(img, coc)
    ramp = synthesize_dp(img, coc, vignetting=(0.3, 0.1))
    assert np.allclose(even['left'], even['right'], atol=1e-3)
    assert ramp['left'].mean() > ramp['right'].mean() + 0.02
    assert ramp['left'][:, 2].mean() > ramp['left'][:, -3].mean()  # the ramp falls across x


def test_default_mix_keeps_the_embedded_set(tmp_path, one_thread):
    scene = dict(
        name='s',
        image=np.random.default_rng(0).random((24, 48, 3), dtype=np.float32),
        inv_depth=np.tile(np.linspace(0, 1, 48, dtype=np.float32), (24, 1)),
        depth='procedural')
    a, b, c = (str(tmp_path / n) for n in 'abc')
    write_synthetic_dpdd(a, coc_max=3.0, focus_per_scene=(1, 1, 1), scenes=[scene])
    write_synthetic_dpdd(b, coc_max=3.0, focus_per_scene=(1, 1, 1), scenes=[scene], psf_mix=None)
    write_synthetic_dpdd(c, coc_max=3.0, focus_per_scene=(1, 1, 1), scenes=[scene], psf_mix=parse_psf_mix('all'))
    f = 'train_l/source/s_00.png'
    read = [cv2.imread(os.path.join(d, f), cv2.IMREAD_UNCHANGED) for d in (a, b, c)]
    assert np.array_equal(read[0], read[1]) and not np.array_equal(read[0], read[2])
