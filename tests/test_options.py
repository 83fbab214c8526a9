"""The option files users copy agree with each other: a test file builds the network its training file trains."""
import pytest
from conftest import load_options

# (training file, its block) -> (file that loads the trained weights, its block)
PAIRS = [
    ('train_defocus_map_synthetic.yml', 'network_map', 'test_defocus_map_synthetic.yml', 'network_map'),
    ('train_defocus_map_synthetic.yml', 'network_kernel', 'test_defocus_map_synthetic.yml', 'network_kernel'),
    ('train_defocus_map_synthetic.yml', 'network_map', 'test_defocus_deconv_synthetic.yml', 'network_map'),
    ('train_defocus_map_synthetic.yml', 'network_kernel', 'test_defocus_deconv_synthetic.yml', 'network_kernel'),
    ('train_defocus_map_synthetic.yml', 'network_map', 'test_defocus_deconv_occlusion_synthetic.yml', 'network_map'),
    ('train_defocus_map_synthetic.yml', 'network_kernel', 'test_defocus_deconv_occlusion_synthetic.yml',
     'network_kernel'),
    ('train_defocusgan_synthetic.yml', 'network_g', 'test_defocusgan_synthetic.yml', 'network_g'),
    ('train_mccnet_synthetic.yml', 'network_g', 'test_mccnet_synthetic.yml', 'network_g'),
    ('train_srmodel_single_synthetic.yml', 'network_g', 'test_srmodel_single_synthetic.yml', 'network_g'),
    ('train_defocus_map.yml', 'network_map', 'test_defocus_map.yml', 'network_map'),
    ('train_defocus_map.yml', 'network_kernel', 'test_defocus_map.yml', 'network_kernel'),
    ('train_defocus_map.yml', 'network_map', 'test_defocus_deconv.yml', 'network_map'),
    ('train_defocus_map.yml', 'network_map', 'train_defocusgan.yml', 'train.defocus_map.network'),
    ('train_defocusgan.yml', 'network_g', 'test_defocusgan.yml', 'network_g'),
    ('train_defocus_map_slim.yml', 'network_map', 'test_defocus_map_slim.yml', 'network_map'),
    ('train_defocus_map_slim.yml', 'network_kernel', 'test_defocus_map_slim.yml', 'network_kernel'),
    ('train_defocus_map_slim.yml', 'network_map', 'test_defocus_deconv_slim.yml', 'network_map'),
    ('train_defocus_map_slim.yml', 'network_kernel', 'test_defocus_deconv_slim.yml', 'network_kernel'),
    ('train_defocus_map_slim.yml', 'network_map', 'train_defocusgan_slim.yml', 'train.defocus_map.network'),
    ('train_defocusgan_slim.yml', 'network_g', 'test_defocusgan_slim.yml', 'network_g'),
    ('train_defocus_map.yml', 'network_kernel', 'test_defocus_deconv.yml', 'network_kernel'),
    ('train_mccnet.yml', 'network_g', 'test_mccnet.yml', 'network_g'),
]
# keys that do not change the network's weights (LearnableBlurKernel's initial shape is irrelevant once trained)
NOT_ARCH = {'network_kernel': ('order', 'cutoff', 'beta', 'sigma')}


def block(name, key):
    value = load_options(name)
    for part in key.split('.'):
        value = value[part]
    return dict(value)


@pytest.mark.parametrize('train, train_key, other, other_key', PAIRS)
def test_loading_file_builds_the_trained_network(train, train_key, other, other_key):
    a, b = block(train, train_key), block(other, other_key)
    for k in NOT_ARCH.get(train_key, ()):
        a.pop(k, None), b.pop(k, None)
    assert a == b, f'{other}:{other_key} differs from {train}:{train_key}'
