"""scripts/learning_curves.py: the budget rescaling of the photo recipes and the reading of BasicSR training logs."""
import argparse
import importlib.util
import math
import pytest
import yaml
from os import path as osp

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


@pytest.fixture(scope='module')
def lc():
    spec = importlib.util.spec_from_file_location('learning_curves', osp.join(ROOT, 'scripts', 'learning_curves.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load(kind, name):
    with open(osp.join(ROOT, 'options', kind, name)) as f:
        return yaml.safe_load(f)


def test_every_recipe_has_its_files_and_test_networks_match(lc):
    for key, recipe in lc.RECIPES.items():
        train = _load('train', recipe['train'])
        assert train['num_gpu'] == 0 and train['datasets']['train']['dataroot'] == 'datasets/photos_dpdd', key
        for test_file in recipe['tests']:
            test = _load('test', test_file)
            for net in ('network_g', 'network_map'):  # strict loading needs the training file's architecture
                if net in test:
                    assert test[net] == train[net], (key, test_file, net)


def test_stage1_tests_use_the_cue_options_the_checkpoint_trained_with(lc, tmp_path, monkeypatch):
    """The cue's options are buffers, not weights: strict loading cannot catch a test file whose cue differs from the
    recipe's (e.g. an override of match_highpass), so run_test writes the trained network options into the test run."""
    written = []
    monkeypatch.setattr(lc, 'run_entry', lambda kind, opt_path, *a, **k: written.append(opt_path))
    monkeypatch.setattr(lc, 'newest', lambda *a: None)
    monkeypatch.setattr(lc, 'parse_validation', lambda log: {'aiwe1': (1.0, None)})
    args = argparse.Namespace(data='datasets/photos_dpdd', split='test', work=str(tmp_path), threads=1)
    trained = lc.recipe_options('defocus_map_raw_cue', args)['network_map']
    assert trained['match_highpass'] == 0 != _load('test',
                                                   'test_defocus_map_photos.yml')['network_map']['match_highpass']
    for test_file in lc.RECIPES['defocus_map_raw_cue']['tests']:
        scores = lc.run_test(test_file, 'defocus_map_photos_raw_cue', args, network_map=trained)
        deconv = _load('test', test_file).get('deconv')  # the table names the deconvolution that ran
        assert scores.pop('deconv', None) == (deconv and lc.deconv_name(deconv)) and scores == {'aiwe1': 1.0}
        with open(written[-1]) as f:
            assert yaml.safe_load(f)['network_map'] == trained


def test_deconvolution_names(lc):
    assert lc.deconv_name({'method': 'wiener', 'reg': 0.1}) == lc.deconv_name({}) == 'Wiener'
    assert lc.deconv_name({'method': 'occlusion'}) == 'occlusion-aware (quadratic prior)'
    assert lc.deconv_name({'method': 'occlusion', 'exponent': 0.8}) == 'occlusion-aware (sparse prior, exponent 0.8)'
    guided = {'method': 'occlusion', 'map_filter': {'radius': 4, 'eps': 1e-3}}
    assert lc.deconv_name(guided) == 'occlusion-aware (quadratic prior, guided map filter)'
    assert lc.deconv_name({**guided, 'map_source': 'gt'}) == 'occlusion-aware (quadratic prior)'  # GT maps: unfiltered
    both = 'occlusion-aware (quadratic prior, guided map filter, both DP views)'
    assert lc.deconv_name({**guided, 'views': 'dp'}) == both


def test_budget_rescales_every_iteration_count(lc):
    args = argparse.Namespace(data='datasets/photos_dpdd')
    opt = lc.recipe_options('defocusgan_slim', args)
    file_total = opt['train']['total_iter']
    mapping = lc.scale_schedule(opt, file_total // 3)
    train = opt['train']
    assert train['total_iter'] == file_total // 3
    for key in ('train:gan_start_iter', 'train:critic_start_iter', 'train:guidance:anneal_iters'):
        old, new = mapping[key]
        assert new == round(old / 3), key
    assert train['scheduler']['milestones'] == [round(m / 3) for m in mapping['train:scheduler:milestones'][0]]
    # the ablation keeps its guidance off whatever the budget
    ablation = lc.recipe_options('defocusgan_slim_noguide', args)
    assert ablation['name'] == 'defocusgan_slim_photos_noguide'
    lc.scale_schedule(ablation, 100)
    assert ablation['train']['guidance']['anneal_iters'] == 0
    # the L1-only variant: critic and adversarial term start at the last iteration, whatever the budget
    l1_only = lc.recipe_options('defocusgan_slim_l1', args)
    lc.scale_schedule(l1_only, 777)
    assert l1_only['train']['critic_start_iter'] == l1_only['train']['gan_start_iter'] == 777
    # cosine periods cover the rescaled run exactly; stage-1 phases scale too
    mcc = lc.recipe_options('mccnet', args)
    lc.scale_schedule(mcc, 777)
    assert sum(mcc['train']['scheduler']['periods']) == 777
    stage1 = lc.recipe_options('defocus_map', args)
    net_iters = stage1['train']['phase_schedule']['network_iters']
    lc.scale_schedule(stage1, stage1['train']['total_iter'] // 2)
    assert stage1['train']['phase_schedule']['network_iters'] == round(net_iters / 2)


LOG = """2026-12-03 06:00:00,000 INFO: Start training from epoch: 0, iter: 0
2026-12-03 06:00:10,000 INFO: [mccne..][epoch:  0, iter:       5, lr:(1.000e-03,)] [eta: 0:00:10, time (data): 2.0 (0.1)] l_pix: 1.0e-01 l_ssim: 2.0e-01
2026-12-03 06:00:20,500 INFO: [mccne..][epoch:  0, iter:      10, lr:(1.000e-03,)] [eta: 0:00:05, time (data): 2.0 (0.1)] l_pix: 9.0e-02 l_ssim: nan
2026-12-03 06:00:21,000 INFO: Validation PhotosDP_val
\t # psnr: 25.5000 [16-bit reads, scored 8-bit]\tBest: 25.5000 @ 10 iter
\t # ssim: 0.8000\tBest: 0.8000 @ 10 iter

2026-12-03 06:00:25,000 WARNING: Iteration 12: non-finite l_pix; update skipped (1 in a row)
2026-12-03 06:00:31,000 INFO: [mccne..][epoch:  0, iter:   1,015, lr:(1.000e-03,)] [eta: 0:00:00, time (data): 2.0 (0.1)] l_pix: 8.0e-02
2026-12-03 06:00:32,000 INFO: Validation PhotosDP_val
\t # psnr: 25.9000\tBest: 25.9000 @ 1015 iter

2026-12-03 06:00:33,000 INFO: End of training. Time consumed: 0:00:33
2026-12-03 06:00:33,000 INFO: Save the latest model.
2026-12-03 06:00:34,000 INFO: Validation PhotosDP_val
\t # psnr: 25.9000\tBest: 25.9000 @ 1015 iter
"""  # noqa: E501


def test_training_log_gives_curve_health_and_times(lc, tmp_path):
    path = tmp_path / 'train.log'
    path.write_text(LOG)
    log = lc.read_train_log(str(path))
    assert [it for it, _, _ in log['iters']] == [5, 10, 1015]
    assert log['iters'][1][2]['l_pix'] == 0.09 and math.isnan(log['iters'][1][2]['l_ssim'])  # the health check sees it
    # validations are dated and attributed to the iteration logged before them; the repeat after the end is dropped
    assert [(it, m['psnr']) for it, _, m in log['val']] == [(10, 25.5), (1015, 25.9)]
    assert log['val'][0][1] - log['start'] == pytest.approx(21.0)
    assert log['val'][0][2]['ssim'] == 0.8
    assert log['skips'] == 1
    assert log['val_seconds'] == pytest.approx(0.5 + 1.0 + 1.0)  # wall clock inside train_minutes, the repeat too
    # the validation after 'End of training' scores the final model: at total_iter, unless that was just validated
    assert [it for it, _, _ in lc.read_train_log(str(path), total_iter=1015)['val']] == [10, 1015]
    assert [it for it, _, _ in lc.read_train_log(str(path), total_iter=1020)['val']] == [10, 1015, 1020]


def test_reused_result_reads_its_kept_log_and_keeps_its_curve_without_one(lc, tmp_path, monkeypatch):
    """A run resumed with --reuse in a fresh checkout (no experiments/) reads the log copy kept with the results."""
    monkeypatch.setattr(lc, 'ROOT', str(tmp_path))
    (tmp_path / 'out' / 'logs').mkdir(parents=True)
    (tmp_path / 'out' / 'logs' / 'train_run.log').write_text(LOG)
    result = {'name': 'run', 'metric': 'psnr', 'iters': 1015, 'log': 'out/logs/train_run.log'}
    lc.read_curve(result)
    assert [c['iter'] for c in result['curve']] == [10, 1015] and result['health']['nan_guard_skips'] == 1
    stored = {**result, 'log': 'out/logs/gone.log'}
    lc.read_curve(stored)  # neither the copy nor experiments/run: the stored curve stands
    assert stored['curve'] == result['curve']
    with pytest.raises(SystemExit, match='run: no training log'):
        lc.read_curve({'name': 'run', 'metric': 'psnr', 'iters': 1015})


@pytest.mark.usefixtures('one_thread')
@pytest.mark.parametrize('recipe', [
    'train_defocus_map_photos.yml', 'train_defocus_map_supervised_photos.yml', 'train_defocus_map_search_photos.yml',
    'train_mccnet_photos.yml', 'train_defocusgan_slim_photos.yml', 'train_defocusgan_release_photos.yml'
])
def test_photo_recipes_train_and_their_test_files_load_the_checkpoint(tmp_path, synthetic_root, recipe):
    from conftest import FAST, run_test, run_train, tiny_options  # the embedded set has the photo set's layout
    fast = dict(FAST, **{'datasets:train:gt_size': 32, 'datasets:train:dataset_enlarge_ratio': 1})
    if 'defocus_map' in recipe:
        fast.update({'train:phase_schedule:network_iters': 1, 'train:phase_schedule:alternate_iters': 1})
    run_train(tiny_options(recipe, tmp_path, synthetic_root, fast), tmp_path)
    name = _load('train', recipe)['name']
    assert (tmp_path / 'experiments' / name / 'models').is_dir()
    test_file = recipe.replace('train_', 'test_')
    if 'defocus_map' not in recipe:  # strict loading of the checkpoint through the recipe's test file (raises)
        run_test(tiny_options(test_file, tmp_path, synthetic_root, {'val:save_img': False}), tmp_path)
        assert (tmp_path / 'results' / name).is_dir()


@pytest.mark.parametrize('item, message', [('missing.json:defocusgan_slim', 'needs an existing results.json'),
                                           ('{json}:mccnet', "no recipe 'mccnet' in"),
                                           ('{json}:defocusgan_slim=renamed', 'needs an existing results.json')])
def test_merge_refuses_what_it_cannot_take_naming_the_item(tmp_path, item, message):
    import json
    import subprocess
    import sys
    results = tmp_path / 'results.json'
    results.write_text(json.dumps({'commands': [], 'references': {}, 'recipes': {'defocusgan_slim': {}}}))
    item = item.format(json=results)
    command = [sys.executable, osp.join(ROOT, 'scripts', 'learning_curves.py'), '--out', str(tmp_path / 'out')]
    proc = subprocess.run(command + ['--merge', item], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and f'--merge {item}: {message}' in proc.stderr, proc.stderr
    assert not (tmp_path / 'out').exists()  # refused before anything is written


def test_reuse_refuses_a_run_trained_on_other_data(lc, tmp_path):
    import json
    import subprocess
    import sys
    data = tmp_path / 'data'
    (data / 'train_c' / 'source').mkdir(parents=True)
    (data / 'train_c' / 'source' / 'a.png').write_bytes(b'one')
    first = lc.data_fingerprint(str(data))
    (data / 'train_c' / 'source' / 'a.png').write_bytes(b'two')
    assert lc.data_fingerprint(str(data)) != first  # contents count, not only names
    out = tmp_path / 'out'
    out.mkdir()
    saved = json.dumps({'commands': [], 'data_sha256': first, 'recipes': {}})
    (out / 'results.json').write_text(saved)
    command = [sys.executable, osp.join(ROOT, 'scripts', 'learning_curves.py'), '--data', str(data), '--out', str(out)]
    proc = subprocess.run(command + ['--reuse', '--work', str(tmp_path / 'work')], capture_output=True, text=True)
    assert proc.returncode == 1 and 'was trained on another --data' in proc.stderr, proc.stderr
    assert (out / 'results.json').read_text() == saved  # nothing already written is lost


def test_recipe_fingerprint_follows_the_option_file_and_the_override(lc, tmp_path, monkeypatch):
    (tmp_path / 'options' / 'train').mkdir(parents=True)
    option_file = tmp_path / 'options' / 'train' / 'r.yml'
    option_file.write_text('train: {gan_opt: {loss_weight: 0.0005}}\n')
    monkeypatch.setattr(lc, 'ROOT', str(tmp_path))
    monkeypatch.setitem(lc.RECIPES, 'r', {'train': 'r.yml'})
    monkeypatch.setitem(lc.RECIPES, 'r_low', {'train': 'r.yml', 'override': {'train:gan_opt:loss_weight': 0.0002}})
    first = lc.recipe_fingerprint('r')
    assert lc.recipe_fingerprint('r') == first  # stable: a reused run keeps an unchanged recipe
    assert lc.recipe_fingerprint('r_low') != first
    option_file.write_text('train: {gan_opt: {loss_weight: 0.0002}}\n')
    assert lc.recipe_fingerprint('r') != first  # an edited recipe trains again under --reuse


def test_reuse_trains_again_a_recipe_given_another_budget(lc, monkeypatch):
    monkeypatch.setattr(lc, 'recipe_fingerprint', lambda key: 'same')
    result = {'option_file': 'r.yml', 'recipe_sha256': 'same', 'budget_minutes': 45.0}
    assert lc.stale_reason('r', result, 45) is None
    assert lc.stale_reason('r', result, None) is None  # --iters runs keep what is there
    assert lc.stale_reason('r', result, 60) == 'trained for 45 min, asked for 60'
    assert 'r.yml changed' in lc.stale_reason('r', {**result, 'recipe_sha256': 'other'}, 45)


@pytest.mark.parametrize('schedule', [(1200, 200, 2400), (7, 3, 30), (5, 0, 20), (0, 4, 9)])
def test_probe_plan_counts_the_stage1_kernel_steps_as_the_model_runs_them(lc, schedule):
    """Kernel-only steps cost half a network step: a plan that ignores them trained 45 min of budget in 32."""
    from defocusgan_plugin.models.defocus_map_model import DefocusMapModel
    network, alternate, total = schedule
    opt = {'train': {'total_iter': total, 'phase_schedule': {'network_iters': network, 'alternate_iters': alternate}}}
    model = argparse.Namespace(network_iters=network, alternate_iters=alternate)
    kernel = sum(DefocusMapModel.phase_at(model, i) == 'kernel' for i in range(1, total + 1))
    share, keys = lc.second_part(opt)
    assert share == pytest.approx(kernel / total)
    if alternate:  # the probe's second half (iterations n + 1 to 2 n) is kernel-only
        assert keys == ('train:phase_schedule:network_iters', 'train:phase_schedule:alternate_iters')
        probe = argparse.Namespace(network_iters=8, alternate_iters=8)
        assert [DefocusMapModel.phase_at(probe, i) for i in (8, 9, 16)] == ['network', 'kernel', 'kernel']


def test_probe_plan_of_a_gan_recipe_counts_the_steps_after_its_critic_starts(lc):
    opt = {'network_d': {}, 'train': {'total_iter': 3000, 'critic_start_iter': 1000, 'gan_start_iter': 2000}}
    share, keys = lc.second_part(opt)
    assert share == pytest.approx(2 / 3) and sorted(keys) == ['train:critic_start_iter', 'train:gan_start_iter']
    assert lc.second_part({'network_d': {}, 'train': {'total_iter': 10, 'critic_start_iter': 0}})[0] == 1.0
    assert lc.second_part({'train': {'total_iter': 10}}) == (0.0, ())
