"""The numba kernel behind :func:`effnet.nn.depthwise.direct_weight_grad` (imported lazily)."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=True, boundscheck=False)
def weight_grad_nhwc(x, g, out, sh, sw, top, left, c0, c1):  # pragma: no cover - compiled
    """out[i, j, c] = sum over n, oy, ox of g[n, oy, ox, c] * x[n, y, x, c].

    with y = oy*sh - top + i and x = ox*sw - left + j.
    x (N, H, W, C) and g (N, OH, OW, C) are channels-last arrays; taps outside
    x count as zero padding. Only channels c0..c1-1 are written. The inner loop
    runs along contiguous channels, so it vectorises; per image the sum is in
    x's dtype, across images in float64.
    """
    n_img, h, w = x.shape[0], x.shape[1], x.shape[2]
    oh, ow = g.shape[1], g.shape[2]
    kh, kw = out.shape[0], out.shape[1]
    cb = c1 - c0
    total = np.zeros((kh, kw, cb), np.float64)
    acc = np.empty((kh, kw, cb), x.dtype)
    gv = np.empty(cb, x.dtype)
    for n in range(n_img):
        acc[:] = 0
        for oy in range(oh):
            i0 = max(0, top - oy * sh)
            i1 = min(kh, h + top - oy * sh)
            for ox in range(ow):
                j0 = max(0, left - ox * sw)
                j1 = min(kw, w + left - ox * sw)
                for c in range(cb):
                    gv[c] = g[n, oy, ox, c0 + c]
                for i in range(i0, i1):
                    row = x[n, oy * sh - top + i]
                    for j in range(j0, j1):
                        a = acc[i, j]
                        xr = row[ox * sw - left + j]
                        for c in range(cb):
                            a[c] += gv[c] * xr[c0 + c]
        total += acc
    for i in range(kh):
        for j in range(kw):
            for c in range(cb):
                out[i, j, c0 + c] = total[i, j, c]
