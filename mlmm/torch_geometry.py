"""Periodic geometry in TorchScript: minimum images and making a region whole.

OpenMM hands a TorchForce the periodic box as a (3, 3) tensor whose rows are the box
vectors a, b, c in nm, always in OpenMM's reduced (lower-triangular) form::

    a = (ax, 0, 0),  b = (bx, by, 0),  c = (cx, cy, cz),
    with ax > 0, by > 0, cz > 0, |bx| <= ax/2, |cx| <= ax/2, |cy| <= by/2.

In that form subtracting whole box vectors c, then b, then a (each chosen by rounding one
Cartesian component) gives the nearest image of any displacement shorter than half the
smallest box width, triclinic boxes included; this is the rule OpenMM's own kernels use.

Every function here is TorchScript-compatible, works on any device and dtype, performs no
host synchronisation, and is differentiable with respect to the positions (the image
shifts are piecewise constant, so the gradient passes through unchanged).
"""

from __future__ import annotations

import torch
from torch import Tensor


def minimum_image(delta: Tensor, box: Tensor) -> Tensor:
    """Nearest periodic image of the displacement vectors ``delta`` (..., 3), nm.

    ``box`` is the (3, 3) matrix of box vectors (rows a, b, c, nm) in OpenMM's reduced
    form. Exact for displacements shorter than half the smallest box width.
    """
    box = box.to(delta.dtype)
    delta = delta - torch.round(delta[..., 2:3] / box[2, 2]) * box[2]
    delta = delta - torch.round(delta[..., 1:2] / box[1, 1]) * box[1]
    delta = delta - torch.round(delta[..., 0:1] / box[0, 0]) * box[0]
    return delta


def box_widths(box: Tensor) -> Tensor:
    """Distances (3,) nm between opposite faces of the periodic cell with box vectors ``box`` (rows).

    Width i is the cell volume over the area of the face spanned by the two other vectors; a
    displacement shorter than half the smallest width has a unique nearest image.
    """
    volume = torch.abs(torch.linalg.det(box))
    faces = torch.stack([torch.linalg.cross(box[1], box[2]), torch.linalg.cross(box[2], box[0]),
                         torch.linalg.cross(box[0], box[1])])
    return volume / torch.linalg.vector_norm(faces, dim=1)


def make_whole(positions: Tensor, box: Tensor, anchor: int = 0) -> Tensor:
    """Return ``positions`` (n, 3) nm with every atom moved to its image nearest the anchor.

    The anchor atom (index ``anchor`` within ``positions``) stays where it is; each other
    atom is shifted by whole box vectors so that its displacement from the anchor is the
    minimum image. A molecule or cluster smaller than half the smallest box width comes out
    whole whatever wrapping it had on input.
    """
    origin = positions[anchor]
    return origin + minimum_image(positions - origin, box)


def central_atom(positions: Tensor) -> int:
    """Index of the atom nearest the centroid of ``positions`` (n, 3).

    A good anchor for :func:`make_whole`: it minimises the largest anchor-atom distance,
    so the region can be as large as possible before images become ambiguous. Meant for
    set-up time (it returns a Python int, which synchronises with the device).
    """
    centroid = positions.mean(dim=0)
    return int(torch.argmin(torch.linalg.vector_norm(positions - centroid, dim=1)).item())
