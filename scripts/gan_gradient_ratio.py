"""How hard does a DefocusGAN critic pull on the generator, compared with the L1 term?

For a trained generator and one or more critics, on training crops drawn as the recipe draws them: the norm of the
gradient of the generator's weighted adversarial term w.r.t. the generated image, divided by that of its L1 term
(per sample), the cosine between the two, and the critic's slope ``||d mean(D) / dx||`` at the generated images. A
constant offset of the critic's scores changes its loss values but not these gradients.

    python scripts/gan_gradient_ratio.py --opt options/train/train_defocusgan_slim_photos.yml \\
        --net-g experiments/defocusgan_slim_photos_l1/models/net_g_latest.pth \\
        --net-d experiments/defocusgan_slim_photos_l1/models/net_d_latest.pth \\
                experiments/defocusgan_slim_photos/models/net_d_latest.pth
"""
import argparse
import numpy as np
import random
import torch

import defocusgan_plugin  # noqa: F401  # isort: skip  (before basicsr: torchvision alias, registrations)
from basicsr.archs import build_network
from basicsr.data import build_dataset
from basicsr.losses import build_loss

from defocusgan_plugin.utils.checkpoint import load_state_dict_from
from defocusgan_plugin.utils.options import read_yaml


def gradient_ratios(net_g, net_d, loss, batches):
    """Per-sample (adversarial / L1 gradient norm, cosine, critic slope) over ``batches`` of (lq, gt, defocus)."""
    ratio, cosine, slope = [], [], []
    for lq, gt, defocus in batches:
        with torch.no_grad():
            out = net_g(lq)
        out = (out[0] if isinstance(out, (list, tuple)) else out).requires_grad_(True)
        g_l1 = torch.autograd.grad((out - gt).abs().mean(), out)[0].flatten(1)
        g_adv = torch.autograd.grad(loss(net_d(out), True, is_disc=False, defocus=defocus), out)[0].flatten(1)
        g_d = torch.autograd.grad(net_d(out).flatten(1).mean(1).sum(), out)[0].flatten(1)
        ratio += (g_adv.norm(dim=1) / g_l1.norm(dim=1)).tolist()
        cosine += torch.nn.functional.cosine_similarity(g_l1, g_adv).tolist()
        slope += g_d.norm(dim=1).tolist()
    return torch.tensor(ratio), torch.tensor(cosine), torch.tensor(slope)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--opt', required=True, help='the training option file of the checkpoints')
    parser.add_argument('--net-g', required=True)
    parser.add_argument('--net-d', nargs='+', required=True)
    parser.add_argument('--gan-weight', type=float, help="the adversarial term's weight (default: the file's)")
    parser.add_argument('--batches', type=int, default=6)
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for seed in (torch.manual_seed, np.random.seed, random.seed):  # the same crops and flips on every call
        seed(0)
    opt = read_yaml(args.opt)
    net_g = build_network(opt['network_g']).eval()
    net_g.load_state_dict(load_state_dict_from(args.net_g, 'params')[0])
    net_d = build_network(opt['network_d']).eval()
    gan_opt = dict(opt['train']['gan_opt'])
    if args.gan_weight is not None:
        gan_opt['loss_weight'] = args.gan_weight
    loss = build_loss(gan_opt)
    dataset = build_dataset(dict(opt['datasets']['train'], phase='train', scale=opt.get('scale', 1)))
    size = opt['datasets']['train']['batch_size_per_gpu']
    batches = []
    for b in range(args.batches):  # spread over the set, the same crops for every critic
        items = [dataset[(b * size + i) * 37 % len(dataset)] for i in range(size)]
        batches.append([torch.stack([it[k] for it in items]) for k in ('lq', 'gt', 'defocus')])
    print(
        f"{args.batches} batches of {size} crops; generator {args.net_g}; adversarial weight {gan_opt['loss_weight']:g}"
    )
    for path in args.net_d:
        net_d.load_state_dict(load_state_dict_from(path, 'params')[0])
        ratio, cosine, slope = gradient_ratios(net_g, net_d, loss, batches)
        print(f'{path}: |grad adversarial| / |grad L1| median {ratio.median():.3f} (max {ratio.max():.3f}); '
              f'cosine median {cosine.median():+.3f}; critic slope median {slope.median():.2f}')


if __name__ == '__main__':
    main()
