#!/usr/bin/env bash
# Gather a set of free, real camera PHOTOGRAPHS from package registries only
# (no general internet access needed):
#
#   * PyPI      scikit-image  bundled sample photos (skimage/data)
#   * PyPI      scikit-learn  sample images (sklearn/datasets/images)
#   * Debian    lxqt-themes          photographic wallpapers
#   * Debian    sddm-theme-maldives  login background (a beach photo)
#   * Debian    gcompris-qt-data     photos of animals and monuments, stored in
#                                    Qt resource bundles (.rcc), parsed here
#
# Nothing is installed: wheels are fetched with `pip download --no-deps` and read
# as zip files, .deb files with `apt-get download` and unpacked with `dpkg -x`
# into a temporary folder.  Only allow-listed photos are kept (every one was
# looked at; drawings, renders, gradients, logos and screenshots are not listed).
#
# Output:  OUT/<source>/<name>.<ext>  and  OUT/manifest.json  (a list of records
#   {file, source, package_version, licence, copyright, copyright_file,
#    original_path, width, height, embedded, ...}) and OUT/licenses/ (copies
#   of the copyright files the licences were read from).
#   * JPEG/PNG originals are copied byte for byte; WebP originals (gcompris) are
#     decoded and written losslessly as PNG; images whose longer side exceeds
#     2048 px are downscaled (Lanczos) to 2048 and written as PNG.  The manifest
#     says so per file (converted_from / resized_from).
#   * Effectively grey images are dropped, and duplicates too: the same name
#     within one source (sizes, dark/light, stereo left/right variants) and
#     near-identical pictures anywhere (8x8 mean hash + 9x8 difference hash);
#     the largest copy is kept.
#   * embedded=true marks photos the project already ships/uses
#     (skimage astronaut, chelsea, coffee, rocket, motorcycle).
#
# Idempotent: downloads are cached (FETCH_PHOTOS_CACHE, default
# ~/.cache/fetch_photos); when OUT/manifest.json lists files that all exist and
# were made by this version of the script, nothing is done at all.  Existing
# output files are never rewritten.
#
# Usage: scripts/fetch_photos.sh [--out DIR] [--list] [--force]
#   --out DIR  output folder (default: datasets/photos under the repository)
#   --list     print a summary of OUT/manifest.json and exit
#   --force    rebuild the manifest even if it looks complete (files present
#              are still kept as they are)
#
# Needs: bash, apt-get/dpkg (Debian), python3 with Pillow (WebP) + numpy; the
# repository's .venv/bin/python is preferred.  Run as root for apt-get update.
set -euo pipefail

VERSION=1   # bump when the selection or the output format changes

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$REPO/datasets/photos"
LIST=0
FORCE=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --out) OUT="$(realpath -m "${2:?--out needs a folder}")"; shift 2 ;;
        --out=*) OUT="$(realpath -m "${1#--out=}")"; shift ;;
        --list) LIST=1; shift ;;
        --force) FORCE=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
CACHE="${FETCH_PHOTOS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fetch_photos}"

# Packages reserved for evaluation elsewhere: never fetch them (defensive).
FORBIDDEN_RE='^(lomiri-wallpapers.*|mate-backgrounds|plasma-workspace-wallpapers|opencv-doc)$'
DEBS=(lxqt-themes sddm-theme-maldives gcompris-qt-data)

# ---------------------------------------------------------------- python ----
# Prefer the repository venv; otherwise any python3 with Pillow and numpy;
# otherwise a private venv in the cache with Pillow and numpy from PyPI.
has_deps() { "$1" -c 'import PIL, numpy' >/dev/null 2>&1; }
PY=""
for cand in "$REPO/.venv/bin/python" "$CACHE/venv/bin/python" "$(command -v python3 || true)"; do
    if [[ -n "$cand" && -x "$cand" ]] && has_deps "$cand"; then PY="$cand"; break; fi
done
if [[ -z "$PY" ]]; then
    echo "== no python with Pillow+numpy: creating $CACHE/venv" >&2
    mkdir -p "$CACHE"
    python3 -m venv "$CACHE/venv"
    "$CACHE/venv/bin/python" -m pip install -q pillow numpy
    PY="$CACHE/venv/bin/python"
fi
# Light on CPU: this machine is shared with training jobs.
pyrun() { nice -n 10 "$PY" "$@"; }

# ----------------------------------------------------------------- --list ---
summary() {
    pyrun - "$OUT" <<'PY'
import collections, json, os, sys
out = sys.argv[1]
recs = json.load(open(os.path.join(out, 'manifest.json')))
by = collections.OrderedDict()
for r in recs:
    by.setdefault(r['source'], []).append(r)
size = sum(os.path.getsize(os.path.join(out, r['file'])) for r in recs)
print(f"{len(recs)} photos in {out}  ({size / 2**20:.1f} MiB, "
      f"{sum(r['embedded'] for r in recs)} marked embedded)")
for src, rs in by.items():
    lic = sorted({r['licence'] for r in rs})
    print(f"  {src:28s} {len(rs):3d}  {rs[0]['package_version']:18s} {'; '.join(lic)}")
PY
}
if [[ $LIST == 1 ]]; then
    [[ -f "$OUT/manifest.json" ]] || { echo "no manifest at $OUT/manifest.json" >&2; exit 1; }
    summary
    exit 0
fi

# Fast path: a complete manifest from this script version -> nothing to do.
if [[ $FORCE == 0 && -f "$OUT/manifest.json" && -f "$OUT/.fetch_photos_version" ]] \
   && [[ "$(cat "$OUT/.fetch_photos_version")" == "$VERSION" ]] \
   && pyrun -c '
import json, os, sys
out = sys.argv[1]
sys.exit(0 if all(os.path.isfile(os.path.join(out, r["file"]))
                  for r in json.load(open(os.path.join(out, "manifest.json")))) else 1)' "$OUT"; then
    echo "== $OUT is up to date (use --force to rebuild the manifest)"
    summary
    exit 0
fi

mkdir -p "$CACHE/pypi" "$CACHE/deb" "$OUT"

# ------------------------------------------------------------ downloads ----
# PyPI wheels: only when the package is not importable from $PY already.
fetch_wheel() {   # $1 = distribution name, $2 = import name, $3 = wheel glob
    if "$PY" -c "import $2" >/dev/null 2>&1; then return 0; fi
    if compgen -G "$CACHE/pypi/$3" >/dev/null; then return 0; fi
    echo "== pip download $1"
    "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$CACHE/pypi" "$1"
}
fetch_wheel scikit-image skimage 'scikit_image-*.whl'
fetch_wheel scikit-learn sklearn 'scikit_learn-*.whl'

# Debian packages: apt-get download (never install); apt-get update once.
updated=0
for pkg in "${DEBS[@]}"; do
    [[ "$pkg" =~ $FORBIDDEN_RE ]] && { echo "refusing forbidden package $pkg" >&2; exit 1; }
    compgen -G "$CACHE/deb/${pkg}_*.deb" >/dev/null && continue
    if [[ $updated == 0 ]]; then
        echo "== apt-get update"
        apt-get update -qq || echo "apt-get update failed; trying the current lists" >&2
        updated=1
    fi
    echo "== apt-get download $pkg"
    (cd "$CACHE/deb" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >/dev/null)
done

# Unpack the .deb files into a temporary tree (removed on exit).
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
for pkg in "${DEBS[@]}"; do
    deb="$(ls "$CACHE/deb/${pkg}"_*.deb | sort -V | tail -n1)"
    mkdir -p "$TMP/$pkg"
    dpkg -x "$deb" "$TMP/$pkg"
    dpkg-deb -f "$deb" Version >"$TMP/$pkg.version"
done

# ------------------------------------------------------ select and write ----
echo "== selecting, deduplicating and writing photos (nice -n 10)"
pyrun - "$OUT" "$CACHE" "$TMP" "$VERSION" <<'PY'
import fnmatch, glob, hashlib, io, json, os, re, struct, sys, zipfile, zlib
import numpy as np
from PIL import Image, features

OUT, CACHE, TMP, VERSION = sys.argv[1:5]
MAX_SIDE = 2048
Image.MAX_IMAGE_PIXELS = None

# ---- allow-lists (every entry was inspected by eye: real camera photos) ----
SKIMAGE = {  # file -> (licence, copyright/credit, embedded)
    'astronaut.png': ('public-domain', 'NASA (no known copyright restrictions)', True),
    'chelsea.png': ('CC0-1.0', 'Stefan van der Walt', True),
    'coffee.png': ('CC0-1.0', 'Rachel Michetti (courtesy of Pikolo Espresso Bar)', True),
    'rocket.jpg': ('public-domain', 'SpaceX', True),
    # Middlebury 2014 stereo benchmark; the right view is a stereo near-duplicate
    'motorcycle_left.png': ('unstated (Middlebury 2014 stereo dataset; scikit-image is BSD-3-Clause)',
                            'N. Nesic, P. Westling, X. Wang, Y. Kitajima, G. Krathwohl, D. Scharstein', True),
    'motorcycle_right.png': ('unstated (Middlebury 2014 stereo dataset; scikit-image is BSD-3-Clause)',
                             'N. Nesic, P. Westling, X. Wang, Y. Kitajima, G. Krathwohl, D. Scharstein', True),
}
SKLEARN = {'china.jpg': ('CC-BY-2.0', 'danielbuechele (Flickr)'),
           'flower.jpg': ('CC-BY-2.0', 'vultilion (Flickr)')}
LXQT = ['Butterfly-Kenneth-Wimer.jpg', 'Valendas.png', 'after-the-rain.jpg', 'appleflower.png',
        'beam.png', 'butterfly.png', 'cloud.png', 'drop.png', 'flowers.png', 'fog.jpg',
        'this-is-not-windows.jpg']
# gcompris-qt-data: rcc bundle -> (name prefix, regex on the resource path)
GCOMPRIS = {'erase': ('erase', r'/erase/resource/[^/]+\.webp$'),
            'explore_monuments': ('monument', r'/explore_monuments/resource/[^/]+/[^/]+\.webp$'),
            'explore_world_animals': ('world_animal', r'/explore_world_animals/resource/animals/[^/]+\.webp$'),
            'explore_farm_animals': ('farm_animal', r'/explore_farm_animals/resource/animals/[^/]+\.webp$')}


# ---- helpers ----
def dep5(text):
    """Parse a machine-readable debian/copyright: [(patterns, copyright, licence)]."""
    stanzas = []
    for para in re.split(r'\n\s*\n', text):
        fields, key = {}, None
        for line in para.splitlines():
            if line[:1] in (' ', '\t') and key:
                fields[key] += '\n' + line.strip()
            elif ':' in line:
                key, val = line.split(':', 1)
                key = key.strip().lower(); fields[key] = val.strip()
        if 'files' in fields:
            holders = [l for l in fields.get('copyright', '').splitlines() if l]
            if len(holders) > 3:  # keep the manifest short; the full list is in the file
                holders = holders[:3] + [f'... (+{len(holders) - 3} more in the copyright file)']
            stanzas.append((fields['files'].split(), ' / '.join(holders),
                fields.get('license', '').splitlines()[0] if fields.get('license') else ''))
    return stanzas


def licence_for(stanzas, upstream_path):
    """Last matching Files: stanza wins (DEP-5)."""
    hit = ('', 'unknown')
    for pats, cr, lic in stanzas:
        if any(fnmatch.fnmatchcase(upstream_path, p) for p in pats):
            hit = (cr, lic)
    return hit


def rcc_entries(path):
    """Yield (resource path, bytes) from a Qt binary resource file (.rcc)."""
    b = open(path, 'rb').read()
    if b[:4] != b'qres':
        raise ValueError(f'{path}: not a Qt resource file')
    ver, tree, data, names = struct.unpack('>IIII', b[4:20])
    node = 14 if ver == 1 else 22

    def name(off):
        n, = struct.unpack('>H', b[names + off:names + off + 2])
        return b[names + off + 6:names + off + 6 + 2 * n].decode('utf-16-be')

    stack = [(0, '')]
    while stack:
        idx, prefix = stack.pop()
        o = tree + idx * node
        noff, flags = struct.unpack('>IH', b[o:o + 6])
        nm = name(noff) if idx else ''
        if flags & 2:  # directory
            count, first = struct.unpack('>II', b[o + 6:o + 14])
            stack.extend((c, f'{prefix}{nm}/' if idx else '') for c in range(first, first + count))
            continue
        doff, = struct.unpack('>I', b[o + 10:o + 14])
        size, = struct.unpack('>I', b[data + doff:data + doff + 4])
        raw = b[data + doff + 4:data + doff + 4 + size]
        if flags & 4:
            import zstandard  # only if ever needed
            raw = zstandard.ZstdDecompressor().decompress(raw)
        elif flags & 1:
            raw = zlib.decompress(raw[4:])
        yield prefix + nm, raw


def open_rgb(data):
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def hashes(im):
    g = im.convert('L')
    a = np.asarray(g.resize((8, 8), Image.BOX), dtype=np.float32)
    d = np.asarray(g.resize((9, 8), Image.BOX), dtype=np.float32)
    return (a > a.mean()).ravel(), (d[:, 1:] > d[:, :-1]).ravel()


def chroma(im):
    """99th percentile of max-min over RGB on a 64x64 thumbnail (~0 for a grey picture)."""
    a = np.asarray(im.convert('RGB').resize((64, 64), Image.BOX), dtype=np.int16)
    return float(np.percentile(a.max(-1) - a.min(-1), 99))


def name_key(name):
    k = os.path.splitext(name)[0].lower()
    k = re.sub(r'[_-]?\d{3,5}x\d{3,5}', '', k)
    k = re.sub(r'([_-](l|d|left|right|dark|light|portrait|\d+))+$', '', k)
    return k


# ---- gather candidates ----
cands = []  # dicts with data (bytes), meta


def add(source, subdir, name, data, meta):
    cands.append(dict(source=source, subdir=subdir, name=name, data=data, **meta))


def wheel_or_installed(modname, wheel_glob, members):
    """Return (version, {member: bytes}) from the importable package or a cached wheel."""
    try:
        mod = __import__(modname)
        root = os.path.dirname(os.path.dirname(mod.__file__))
        return mod.__version__, {m: open(os.path.join(root, m), 'rb').read()
                                 for m in members if os.path.isfile(os.path.join(root, m))}
    except ImportError:
        whl = sorted(glob.glob(os.path.join(CACHE, 'pypi', wheel_glob)))[-1]
        ver = os.path.basename(whl).split('-')[1]
        with zipfile.ZipFile(whl) as z:
            names = set(z.namelist())
            return ver, {m: z.read(m) for m in members if m in names}


ver, files = wheel_or_installed('skimage', 'scikit_image-*.whl',
                                ['skimage/data/' + f for f in SKIMAGE] + ['skimage/data/_fetchers.py'])
for f, (lic, cr, emb) in SKIMAGE.items():
    m = 'skimage/data/' + f
    if m in files:
        add('skimage', 'skimage', os.path.splitext(f)[0], files[m], dict(
            package_version=ver, licence=lic, copyright=cr, original_path=m, embedded=emb,
            copyright_file=f'skimage/data/_fetchers.py (docstring of the loader for {f})',
            licence_text=('skimage', files.get('skimage/data/_fetchers.py'))))

ver, files = wheel_or_installed('sklearn', 'scikit_learn-*.whl',
                                ['sklearn/datasets/images/' + f for f in SKLEARN]
                                + ['sklearn/datasets/images/README.txt'])
for f, (lic, cr) in SKLEARN.items():
    m = 'sklearn/datasets/images/' + f
    if m in files:
        add('sklearn', 'sklearn', os.path.splitext(f)[0], files[m], dict(
            package_version=ver, licence=lic, copyright=cr, original_path=m, embedded=False,
            copyright_file='sklearn/datasets/images/README.txt',
            licence_text=('sklearn', files.get('sklearn/datasets/images/README.txt'))))


def deb(pkg):
    root = os.path.join(TMP, pkg)
    ver = open(os.path.join(TMP, pkg + '.version')).read().strip()
    cfile = f'usr/share/doc/{pkg}/copyright'
    text = open(os.path.join(root, cfile), encoding='utf-8', errors='replace').read()
    return root, ver, cfile, text, dep5(text)


root, ver, cfile, text, st = deb('lxqt-themes')
note = open(os.path.join(root, 'usr/share/lxqt/wallpapers/License')).read()
for f in LXQT:
    p = 'usr/share/lxqt/wallpapers/' + f
    cr, lic = licence_for(st, 'wallpapers/' + f)
    add('deb:lxqt-themes', 'lxqt-themes', os.path.splitext(f)[0], open(os.path.join(root, p), 'rb').read(),
        dict(package_version=ver, licence=lic, copyright=cr, original_path='/' + p, embedded=False,
             copyright_file='/' + cfile,
             licence_note='usr/share/lxqt/wallpapers/License says: CC-BY-SA-3.0, LXQt Project Team; '
                          'photos credited to stefonarch',
             licence_text=('lxqt-themes', text + '\n\n==== usr/share/lxqt/wallpapers/License ====\n' + note)))

root, ver, cfile, text, st = deb('sddm-theme-maldives')
p = 'usr/share/sddm/themes/maldives/background.jpg'
cr, lic = licence_for(st, 'data/themes/maldives/background.jpg')
add('deb:sddm-theme-maldives', 'sddm-theme-maldives', 'maldives_background',
    open(os.path.join(root, p), 'rb').read(),
    dict(package_version=ver, licence=lic, copyright=cr, original_path='/' + p, embedded=False,
         copyright_file='/' + cfile, licence_text=('sddm-theme-maldives', text)))

if features.check('webp'):
    root, ver, cfile, text, st = deb('gcompris-qt-data')
    for rcc, (prefix, rx) in GCOMPRIS.items():
        rpath = f'usr/share/gcompris-qt/rcc/{rcc}.rcc'
        for res, data in sorted(rcc_entries(os.path.join(root, rpath))):
            if not re.search(rx, res):
                continue
            upstream = re.sub(r'^gcompris/', '', res)
            cr, lic = licence_for(st, upstream)
            stem = os.path.splitext(os.path.basename(res))[0]
            add('deb:gcompris-qt-data', 'gcompris-qt-data', f'{prefix}_{stem}', data,
                dict(package_version=ver, licence=lic, copyright=cr, embedded=False,
                     original_path=f'/{rpath}:/{res}', copyright_file='/' + cfile,
                     licence_text=('gcompris-qt-data', text)))
else:
    print('WARNING: this Pillow has no WebP support; gcompris-qt-data photos skipped', file=sys.stderr)

# ---- analyse: size, grey check, hashes ----
for c in cands:
    im = open_rgb(c['data'])
    c['fmt'] = im.format
    c['size'] = im.size
    c['gray'] = im.mode in ('L', 'LA', 'I', 'I;16', '1') or chroma(im) < 6.0
    c['ahash'], c['dhash'] = hashes(im)

dropped = []
kept = []
# largest first, so the kept copy of a duplicate is the largest one
for c in sorted(cands, key=lambda c: -c['size'][0] * c['size'][1]):
    if c['gray']:
        dropped.append((c, 'greyscale'))
        continue
    why = None
    for k in kept:
        da = int((c['ahash'] != k['ahash']).sum())
        dd = int((c['dhash'] != k['dhash']).sum())
        if k['source'] == c['source'] and name_key(k['name']) == name_key(c['name']):
            why = f'same name as {k["subdir"]}/{k["name"]}'
        elif da <= 6 and dd <= 12:
            why = f'near-duplicate of {k["subdir"]}/{k["name"]} (ahash {da}, dhash {dd})'
        if why:
            break
    if why:
        dropped.append((c, why))
    else:
        kept.append(c)

# ---- write files (existing ones are kept untouched) ----
os.makedirs(os.path.join(OUT, 'licenses'), exist_ok=True)
records = []
for c in sorted(kept, key=lambda c: (c['subdir'], c['name'])):
    w, h = c['size']
    rec = {}
    if max(w, h) > MAX_SIDE or c['fmt'] not in ('JPEG', 'PNG'):
        ext = '.png'
        if max(w, h) > MAX_SIDE:
            rec['resized_from'] = [w, h]
            s = MAX_SIDE / max(w, h)
            w, h = max(1, round(w * s)), max(1, round(h * s))
        if c['fmt'] not in ('JPEG', 'PNG'):
            rec['converted_from'] = c['fmt'].lower()
    else:
        ext = '.jpg' if c['fmt'] == 'JPEG' else '.png'
    rel = f"{c['subdir']}/{c['name']}{ext}"
    dst = os.path.join(OUT, rel)
    if not os.path.isfile(dst):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        tmp = dst + '.part'
        if rec:
            im = open_rgb(c['data'])
            im = im.convert('RGBA' if im.mode in ('RGBA', 'LA', 'P') and 'A' in im.getbands() else 'RGB')
            if (w, h) != im.size:
                im = im.resize((w, h), Image.LANCZOS)
            im.save(tmp, 'PNG')
        else:
            with open(tmp, 'wb') as f:
                f.write(c['data'])
        os.replace(tmp, dst)
    with Image.open(dst) as im:
        w, h = im.size
    lic_name, lic_text = c['licence_text']
    lic_file = f'licenses/{lic_name}.txt'
    if lic_text and not os.path.isfile(os.path.join(OUT, lic_file)):
        with open(os.path.join(OUT, lic_file), 'wb') as f:
            f.write(lic_text if isinstance(lic_text, bytes) else lic_text.encode())
    r = dict(file=rel, source=c['source'], package_version=c['package_version'],
             licence=c['licence'], copyright=c['copyright'], copyright_file=c['copyright_file'],
             licence_copy=lic_file, original_path=c['original_path'], width=w, height=h,
             embedded=c['embedded'])
    if 'licence_note' in c:
        r['licence_note'] = c['licence_note']
    r.update(rec)
    r['sha256'] = hashlib.sha256(open(dst, 'rb').read()).hexdigest()
    records.append(r)

tmp = os.path.join(OUT, 'manifest.json.part')
with open(tmp, 'w') as f:
    json.dump(records, f, indent=1)
    f.write('\n')
os.replace(tmp, os.path.join(OUT, 'manifest.json'))
with open(os.path.join(OUT, 'dropped.txt'), 'w') as f:
    for c, why in dropped:
        f.write(f"{c['source']}\t{c['original_path']}\t{why}\n")
with open(os.path.join(OUT, '.fetch_photos_version'), 'w') as f:
    f.write(VERSION + '\n')
print(f'kept {len(records)} of {len(cands)} candidates; dropped {len(dropped)} (see dropped.txt)')
for c, why in dropped:
    print(f"  dropped {c['subdir']}/{c['name']}: {why}")
PY
summary
