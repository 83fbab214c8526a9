"""Finding dual-pixel (DP) pairs of image files: folders of pairs, named pairs and explicit LEFT RIGHT files.

Recognised layouts (case-insensitive side names, any image extension of :mod:`defocusgan_plugin.utils.img_io`):

* a folder holding ``l.png`` + ``r.png`` (or ``left.png`` + ``right.png``), e.g. the Sdirt / DP119 scenes; the
  pair is named after the folder's path relative to the searched root ('/' replaced by '_'; the root's own name
  when the root is the pair's folder); a ``d.png`` beside them is the scene's depth (:func:`depth_path`);
* files ``X_left.EXT`` + ``X_right.EXT`` or ``X_l.EXT`` + ``X_r.EXT`` in one folder, named ``X`` (prefixed by the
  folder's relative path); the two must have the same extension;
* two files given explicitly as LEFT RIGHT, in that order, whatever their names.

A view whose partner is missing is an error naming the file (a silently skipped scene would look processed); so is
a side claimed by two files (``X_l.png`` and ``X_left.png``). Pairs that would share a name (``a/001`` and ``b/001``
given as two folders) are named after as many of their trailing folders as tell them apart (``a_001``, ``b_001``).
"""
import os
import re
from collections import namedtuple
from os import path as osp

from defocusgan_plugin.utils.img_io import is_image_file

DPPair = namedtuple('DPPair', ['name', 'left', 'right'])

_FOLDER_SIDES = {'l': 'left', 'left': 'left', 'r': 'right', 'right': 'right'}
_NAMED = re.compile(r'^(?P<stem>.+)_(?P<side>left|right|l|r)$', re.IGNORECASE)
_OTHER = {'left': 'right', 'right': 'left'}


def parse_view_name(filename):
    """Side and pairing key of a DP view file name.

    Args:
        filename (str): A file name (a path's folder part is ignored).

    Returns:
        tuple[str, str, str] | None: (side 'left' / 'right', stem, extension) where the stem is '' for the folder
        layout (``l.png``), else ``X`` of ``X_left.png``; None when the name names no side or is not an image.
    """
    base = osp.basename(filename)
    if not is_image_file(base):
        return None
    stem, ext = osp.splitext(base)
    side = _FOLDER_SIDES.get(stem.lower())
    if side is not None:
        return side, '', ext.lower()
    match = _NAMED.match(stem)
    if match is None:
        return None
    return _FOLDER_SIDES[match.group('side').lower()], match.group('stem'), ext.lower()


def _pair_name(folder, stem, root):
    """Name of a pair found under ``root`` (None: a file given alone, named after its own folder / stem)."""
    rel = '.' if root is None else osp.relpath(folder, root)
    if rel == '.':
        prefix = '' if stem else osp.basename(osp.abspath(folder))
    else:
        prefix = rel.replace(os.sep, '/').replace('/', '_')
    return '_'.join(p for p in (prefix, stem) if p) or osp.basename(osp.abspath(folder))


def _explicit_pair(left, right):
    """Two files given as LEFT RIGHT: their pair, or None when their names say they are no such pair (two views of
    the same side are two separate inputs)."""
    sides = [parse_view_name(p) for p in (left, right)]
    named = [s[0] if s else None for s in sides]
    if named[0] == named[1] and named[0] is not None:
        return None
    for path, side, wrong in ((left, named[0], 'right'), (right, named[1], 'left')):
        if side == wrong:
            raise ValueError(f'Two files are read as LEFT RIGHT, but {path} is named as a {wrong} view; give the left '
                             'view first.')
    if sides[0] is not None:
        name = _pair_name(osp.dirname(left), sides[0][1], None)
    else:
        name = osp.splitext(osp.basename(left))[0]
    return DPPair(name, left, right)


def _group_key(folder, parsed):
    """Views of one scene share this key: their folder, and for named views the stem and the extension."""
    _, stem, ext = parsed
    return (folder, stem.lower(), ext) if stem else (folder, '', '')


def _views_in(folder, files):
    """{key: {side: path}} of the DP views among ``files`` (names) of ``folder`` (see :func:`_group_key`)."""
    groups = {}
    for f in sorted(files):
        parsed = parse_view_name(f)
        if parsed is None:
            continue
        group = groups.setdefault(_group_key(folder, parsed), {})
        path = osp.join(folder, f)
        if parsed[0] in group:  # l.png and left.png (or X_l.png and X_left.png): one side claimed twice
            raise ValueError(f'Ambiguous DP pair: both {group[parsed[0]]} and {path} are the {parsed[0]} view of '
                             'one scene; rename or remove one.')
        group[parsed[0]] = path
    return groups


def _complete(group):
    """(left, right) of a view group; a missing side is an error naming the file that has no partner."""
    if 'left' in group and 'right' in group:
        return group['left'], group['right']
    side, path = next(iter(group.items()))
    _, stem, ext = parse_view_name(path)
    other = _OTHER[side]
    expected = f'{stem}_{other}{ext} or {stem}_{other[0]}{ext}' if stem else f'{other[0]}.png or {other}.png'
    raise FileNotFoundError(f'One-sided DP input: {path} is a {side} view, but its {other} view ({expected}) is not '
                            f'in {osp.dirname(path) or "."}.')


def find_dp_pairs(paths):
    """Every DP pair in ``paths``: files or folders (searched recursively).

    Two files are read as an explicit LEFT RIGHT pair (named after the left file), unless both are named as views of
    the same side; any other file must be named as a view (``l.png``, ``X_left.png``, ...) and its partner is looked
    for beside it.

    Args:
        paths (str | list[str]): Files or folders.

    Returns:
        list[DPPair]: (name, left_path, right_path) tuples sorted by name.

    Raises:
        FileNotFoundError: A missing path, a one-sided view (the message names the file), nothing found.
        ValueError: A file whose side cannot be told, an ambiguous side, two pairs no folder names tell apart.
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    paths = [os.fspath(p) for p in paths]
    for p in paths:
        if not osp.exists(p):
            raise FileNotFoundError(f'Input not found: {p}')
    if len(paths) == 2 and all(osp.isfile(p) for p in paths):
        pair = _explicit_pair(*paths)
        if pair is not None:
            return [pair]
    pairs = []
    for item in paths:
        if osp.isdir(item):
            found = []
            for folder, dirs, files in os.walk(item):
                dirs.sort()
                for group in _views_in(folder, files).values():
                    left, right = _complete(group)
                    stem = parse_view_name(left)[1]
                    found.append(DPPair(_pair_name(folder, stem, item), left, right))
            if not found:
                raise FileNotFoundError(f'No DP pairs in {item} (expected folders with l.png + r.png, or files '
                                        'X_left.png + X_right.png).')
            pairs += found
            continue
        parsed = parse_view_name(item)
        if parsed is None:
            raise ValueError(f'Cannot tell which DP view {item} is: name the files l.png / r.png or X_left.png / '
                             'X_right.png, or give exactly two files as LEFT RIGHT.')
        folder = osp.dirname(item)
        partners = _views_in(folder, os.listdir(folder or '.')).get(_group_key(folder, parsed), {})
        left, right = _complete(dict(partners, **{parsed[0]: item}))  # the path as given, its partner from disk
        pairs.append(DPPair(_pair_name(folder, parsed[1], None), left, right))
    unique, seen = [], set()
    for pair in pairs:
        key = (osp.realpath(pair.left), osp.realpath(pair.right))
        if key not in seen:  # the same pair reached twice (a folder and a sub-folder, a file and its folder)
            seen.add(key)
            unique.append(pair)
    return sorted(_distinct_names(unique))


def _distinct_names(pairs):
    """Pairs of one name (e.g. ``a/001`` and ``b/001`` given as two folders) are renamed after as many of their
    trailing folders as tell them apart (``a_001``, ``b_001``), so their outputs cannot clash."""
    groups = {}
    for pair in pairs:
        groups.setdefault(pair.name, []).append(pair)
    out = [group[0] for group in groups.values() if len(group) == 1]
    for name, group in groups.items():
        if len(group) == 1:
            continue
        parts = []
        for pair in group:
            folder = osp.realpath(osp.dirname(pair.left)).strip(os.sep).split(os.sep)
            stem = (parse_view_name(pair.left) or ('', ''))[1]
            parts.append([p for p in folder + [stem] if p])
        for depth in range(1, max(len(p) for p in parts) + 1):
            names = ['_'.join(p[-depth:]) for p in parts]
            if len(set(names)) == len(names):
                break
        else:
            raise ValueError(f'Two DP pairs are both named {name!r} ({group[0].left}, {group[1].left}); process them '
                             'separately.')
        out += [pair._replace(name=new) for pair, new in zip(group, names)]
    names = [pair.name for pair in out]
    for pair in out:
        if names.count(pair.name) > 1:
            raise ValueError(f'Two DP pairs are both named {pair.name!r} (one is {pair.left}); process them '
                             'separately.')
    return out


def depth_path(left_path):
    """The scene's depth file of a folder-layout pair: ``d.png`` beside its left view, or None.

    Only folder-layout views (``l.png``) have one: in a folder of named pairs (``X_left.png``) a ``d.png`` would
    belong to none of them in particular.
    """
    parsed = parse_view_name(left_path)
    if parsed is None or parsed[1]:
        return None
    depth = osp.join(osp.dirname(left_path), 'd.png')
    return depth if osp.isfile(depth) else None
