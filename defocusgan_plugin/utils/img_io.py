"""Bit-depth-preserving image reading and writing (8- and 16-bit PNG/TIFF, JPEG).

BasicSR's ``imfrombytes`` decodes with ``cv2.IMREAD_COLOR`` (16-bit data silently becomes 8-bit) and divides by
255; DPDD is 16-bit, so the plugin reads with ``IMREAD_UNCHANGED`` and normalises by each file's own bit depth.
Arrays follow BasicSR's convention: HWC, BGR channel order, float32 in [0, 1].
"""
import cv2
import numpy as np
import os
import tempfile
from os import path as osp

IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.tif', '.tiff', '.bmp', '.PNG', '.JPG', '.JPEG', '.TIF', '.TIFF', '.BMP')


def is_image_file(filename):
    return filename.endswith(IMG_EXTENSIONS)


def decode_raw(content, path='<bytes>'):
    """Decodes image bytes to the file's own samples: HWC (alpha dropped), BGR, uint8 / uint16 / float.

    Args:
        content (bytes): Encoded file content.
        path (str): File path, used in error messages only.

    Returns:
        ndarray: HWC array with 1 or 3 channels, in the file's dtype (see :func:`raw_to_float`).
    """
    if len(content) == 0:
        raise ValueError(f'Image file is empty (0 bytes): {path}')
    img = cv2.imdecode(np.frombuffer(content, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f'Cannot decode image (corrupt or unsupported format): {path}')
    if img.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        raise ValueError(f'Unsupported image dtype {img.dtype} in {path} (expected 8-bit, 16-bit or float).')
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[2] == 4:  # drop alpha
        img = img[..., :3]
    elif img.shape[2] == 2:  # gray + alpha
        img = img[..., :1]
    return img


def bit_depth_of(raw):
    """Bit depth of a raw image array: 8, 16, or 32 for float."""
    return {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}.get(raw.dtype, 32)


def raw_to_float(raw, path='<bytes>', channels=3):
    """Normalises raw samples (see :func:`decode_raw`) by their bit depth to float32 HWC BGR in [0, 1].

    For integer samples without a colour-to-gray conversion this is element-wise, so cropping before or after it
    gives the same values (:func:`crop_then_float` relies on this).

    Args:
        raw (ndarray): HWC uint8 / uint16 / float array (a memory map works).
        path (str): File path, used in error messages only.
        channels (int | None): 3 converts grayscale to BGR (replicated); 1 converts colour to gray; None keeps
            what the array has.

    Returns:
        ndarray: Contiguous float32 array.
    """
    if raw.dtype in (np.uint8, np.uint16):
        img = raw.astype(np.float32)
        img /= 255.0 if raw.dtype == np.uint8 else 65535.0  # in place: same float32 division, no second array
    elif raw.dtype in (np.float32, np.float64):
        img = raw.astype(np.float32)
        if not np.isfinite(img).all():
            raise ValueError(f'Image contains NaN or Inf values: {path}')
    else:
        raise ValueError(f'Unsupported image dtype {raw.dtype} in {path} (expected 8-bit, 16-bit or float).')
    if channels == 3 and img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif channels == 1 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)[..., None]
    return np.ascontiguousarray(img)


def crop_then_float(raw, top, left, size, path='<bytes>', channels=3):
    """``raw_to_float(raw, ...)[top:top + size, left:left + size]`` computed on the crop alone where that is exact.

    Float files (their finiteness check covers the whole image) and colour-to-gray conversions (OpenCV's
    vectorised conversion rounds differently depending on a pixel's position in the row) are converted whole first.

    Returns:
        ndarray: Contiguous float32 HWC crop.
    """
    whole = raw.dtype not in (np.uint8, np.uint16) or (channels == 1 and raw.shape[2] == 3)
    if whole:
        return np.ascontiguousarray(raw_to_float(raw, path, channels)[top:top + size, left:left + size])
    return raw_to_float(raw[top:top + size, left:left + size], path, channels)


def decode_image(content, path='<bytes>', channels=3):
    """Decodes image bytes to float32 HWC BGR in [0, 1], keeping the file's precision.

    Args:
        content (bytes): Encoded file content.
        path (str): File path, used in error messages only.
        channels (int | None): 3 converts grayscale to BGR (replicated) and drops alpha; 1 converts colour to gray;
            None keeps what the file has (HW1 for gray).

    Returns:
        tuple[ndarray, int]: The image and its bit depth (8, 16, or 32 for float files).
    """
    raw = decode_raw(content, path)
    return raw_to_float(raw, path, channels), bit_depth_of(raw)


def read_image(path, channels=3, file_client=None):
    """Reads an image file; see :func:`decode_image`. ``file_client`` is a BasicSR FileClient (optional)."""
    if file_client is not None:
        content = file_client.get(path)
    else:
        if not osp.isfile(path):
            raise FileNotFoundError(f'Image file not found: {path}')
        with open(path, 'rb') as f:
            content = f.read()
    return decode_image(content, path, channels)


def encode_image(img, bit_depth=8, ext='.png'):
    """Quantises a float image in [0, 1] (HWC BGR or HW) to 8 or 16 bits and encodes it.

    Returns:
        bytes: Encoded file content.
    """
    if bit_depth not in (8, 16):
        raise ValueError(f'bit_depth must be 8 or 16, got {bit_depth}.')
    if bit_depth == 16 and ext.lower() in ('.jpg', '.jpeg'):
        raise ValueError('JPEG cannot store 16-bit images; write PNG or TIFF.')
    peak = 255.0 if bit_depth == 8 else 65535.0
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    quant = (np.clip(np.nan_to_num(img), 0.0, 1.0) * peak + 0.5).astype(dtype)
    ok, buf = cv2.imencode(ext, quant)
    if not ok:
        raise ValueError(f'OpenCV cannot encode an image as {ext}.')
    return buf.tobytes()


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path, content):
    """Writes bytes to ``path`` through a temporary file in the same folder and a rename.

    A crash mid-write never leaves a truncated file at ``path``; an existing file is replaced only when the new one
    is complete. Missing parent folders are created; an unwritable folder raises ``PermissionError`` naming it.
    """
    folder = osp.dirname(osp.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix='.' + osp.basename(path) + '.', suffix='.tmp', dir=folder)
    except OSError as err:
        raise PermissionError(f'Cannot write into folder {folder}: {err.strerror or err}') from None
    try:
        with os.fdopen(fd, 'wb') as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # mkstemp's 0600 would survive the rename
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


def write_image(path, img, bit_depth=8):
    """Writes a float image in [0, 1] (HWC BGR or HW) as an 8- or 16-bit file, atomically."""
    atomic_write_bytes(path, encode_image(img, bit_depth, osp.splitext(path)[1] or '.png'))
