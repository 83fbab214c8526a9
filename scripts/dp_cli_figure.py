"""Picture of a defocusgan-dp result: the input (combined view (L + R) / 2) | the colour-mapped defocus map | the
all-in-focus image, side by side, downscaled to at most ``--width`` pixels and further (5 % steps) until the PNG fits
in ``--max-kb``.

    defocusgan-dp ../shared/data/sdirt_real_dp/box/001 -o out --preset fast
    python scripts/dp_cli_figure.py ../shared/data/sdirt_real_dp/box/001 out -o docs/results/dp_cli/sdirt_box001.png

INPUT is what was given to defocusgan-dp for one pair (its folder, or LEFT RIGHT files); RESULTS the folder it wrote
(``NAME_aif.png``, ``NAME_map.png``). The views are shown as stored (sRGB files); raw linear frames would look dark.
"""
import argparse
import cv2
import numpy as np
import sys

from defocusgan_plugin.utils.dp_pairs import find_dp_pairs
from defocusgan_plugin.utils.img_io import atomic_write_bytes, read_image

LABEL_HEIGHT = 22


def panel(img, label, width):
    """An 8-bit BGR panel of ``width`` pixels with a label strip above it."""
    img = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    height = round(img.shape[0] * width / img.shape[1])
    img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
    strip = np.full((LABEL_HEIGHT, width, 3), 255, np.uint8)
    cv2.putText(strip, label, (4, LABEL_HEIGHT - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([strip, img], 0)


def side_by_side(images, width, gap=6):
    """Labelled panels ``[(image, label), ...]`` in a row of ``width`` pixels, white gaps between them."""
    each = (width - gap * (len(images) - 1)) // len(images)
    panels = [panel(img, label, each) for img, label in images]
    spacer = np.full((panels[0].shape[0], gap, 3), 255, np.uint8)
    row = [panels[0]]
    for p in panels[1:]:
        row += [spacer, p]
    return np.concatenate(row, 1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('inputs', nargs='+', metavar='INPUT', help='the pair as given to defocusgan-dp')
    parser.add_argument('results', help="defocusgan-dp's output folder")
    parser.add_argument('-o', '--output', required=True, help='picture to write (PNG)')
    parser.add_argument('--width', type=int, default=1200, help='largest width of the picture (default 1200)')
    parser.add_argument('--max-kb', type=float, default=400, help='largest PNG size in KB (default 400)')
    args = parser.parse_args(argv)
    pairs = find_dp_pairs(args.inputs)
    if len(pairs) != 1:
        parser.error(f'{len(pairs)} DP pairs in {" ".join(args.inputs)}; give one')
    name, left, right = pairs[0]
    left, right = read_image(left)[0], read_image(right)[0]
    aif = read_image(f'{args.results}/{name}_aif.png')[0]
    defocus = read_image(f'{args.results}/{name}_map.png')[0]
    width = args.width
    while True:
        picture = side_by_side([(0.5 * (left + right), 'input (L + R) / 2'),
                                (defocus, 'signed defocus map (blue < 0 < red)'), (aif, 'all-in-focus')], width)
        ok, buf = cv2.imencode('.png', picture, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        if not ok:
            raise ValueError(f'Cannot encode {args.output}.')
        if len(buf) <= args.max_kb * 1024 or width < 300:
            break
        width = int(width * 0.95)
    atomic_write_bytes(args.output, buf.tobytes())
    print(f'Wrote {args.output} ({picture.shape[1]}x{picture.shape[0]}, {len(buf) / 1024:.0f} KB)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
