"""Periodic geometry in TorchScript (mlmm.torch_geometry) against brute-force image searches."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from mlmm.torch_geometry import box_widths, central_atom, make_whole, minimum_image


def reduced_boxes(count, seed=0):
    """Random triclinic boxes in OpenMM's reduced form, plus a cubic one."""
    rng = np.random.default_rng(seed)
    boxes = [np.diag([2.0, 2.0, 2.0])]
    while len(boxes) < count:
        ax, by, cz = rng.uniform(1.5, 3.0, size=3)
        bx = rng.uniform(-0.5, 0.5) * ax
        cx, cy = rng.uniform(-0.5, 0.5) * ax, rng.uniform(-0.5, 0.5) * by
        boxes.append(np.array([[ax, 0, 0], [bx, by, 0], [cx, cy, cz]]))
    return boxes


def brute_force_minimum_image(delta, box):
    images = np.array(list(itertools.product(range(-3, 4), repeat=3))) @ box
    candidates = delta[:, None, :] + images[None, :, :]
    best = np.argmin(np.linalg.norm(candidates, axis=2), axis=1)
    return candidates[np.arange(len(delta)), best]


@pytest.mark.parametrize("box", reduced_boxes(6), ids=lambda b: f"box{b[1, 0]:+.2f}{b[2, 0]:+.2f}{b[2, 1]:+.2f}")
def test_minimum_image_matches_brute_force_search(box):
    rng = np.random.default_rng(1)
    limit = 0.5 * min(box[0, 0], box[1, 1], box[2, 2])
    # displacements shorter than half the smallest width, hidden behind random lattice translations
    short = rng.normal(size=(500, 3))
    short *= (rng.uniform(0, 0.99, size=(500, 1)) * limit) / np.linalg.norm(short, axis=1, keepdims=True)
    disguised = short + rng.integers(-3, 4, size=(500, 3)) @ box
    result = minimum_image(torch.tensor(disguised), torch.tensor(box)).numpy()
    np.testing.assert_allclose(result, short, atol=1e-12)
    np.testing.assert_allclose(result, brute_force_minimum_image(disguised, box), atol=1e-12)


@pytest.mark.parametrize("box", reduced_boxes(4, seed=2), ids=lambda b: f"box{b[1, 0]:+.2f}{b[2, 0]:+.2f}{b[2, 1]:+.2f}")
def test_box_widths_are_the_distances_between_opposite_faces(box):
    """Width i: the distance from the origin to the plane through vector i parallel to the other two."""
    expected = []
    for i in range(3):
        j, k = [m for m in range(3) if m != i]
        normal = np.cross(box[j], box[k])
        expected.append(abs(box[i] @ normal) / np.linalg.norm(normal))
    assert box_widths(torch.tensor(box)).numpy() == pytest.approx(expected, rel=1e-12)
    if np.count_nonzero(box - np.diag(np.diag(box))) == 0:
        assert box_widths(torch.tensor(box)).numpy() == pytest.approx(np.diag(box), rel=1e-12)


def test_minimum_image_works_in_float32_and_keeps_dtype():
    box = reduced_boxes(2)[1]
    delta = torch.tensor([[0.9 * box[0, 0], 0.1, -0.2]], dtype=torch.float32)
    result = minimum_image(delta, torch.tensor(box))
    assert result.dtype == torch.float32
    np.testing.assert_allclose(result.numpy(), brute_force_minimum_image(delta.double().numpy(), box), atol=1e-6)


def test_make_whole_reassembles_a_wrapped_molecule_and_passes_gradients():
    box = reduced_boxes(3)[2]
    rng = np.random.default_rng(2)
    molecule = rng.normal(scale=0.15, size=(12, 3))  # about 0.5 nm across
    molecule += box.sum(axis=0) - 0.05  # straddling the far corner of the cell
    fractional = molecule @ np.linalg.inv(box)
    wrapped = (fractional - np.floor(fractional)) @ box  # every atom put into the primary cell
    assert np.ptp(wrapped, axis=0).max() > 1.0

    positions = torch.tensor(wrapped, requires_grad=True)
    whole = make_whole(positions, torch.tensor(box), anchor=4)
    shift = wrapped[4] - molecule[4]
    np.testing.assert_allclose(whole.detach().numpy(), molecule + shift, atol=1e-12)
    lattice = np.linalg.solve(box.T, shift)  # the molecule moved by a whole lattice vector
    np.testing.assert_allclose(lattice, np.round(lattice), atol=1e-9)

    weights = torch.tensor(rng.normal(size=(12, 3)))
    (gradient,) = torch.autograd.grad((whole * weights).sum(), positions)
    np.testing.assert_allclose(gradient.numpy(), weights.numpy())


def test_make_whole_is_scriptable():
    scripted = torch.jit.script(make_whole)
    box = torch.eye(3, dtype=torch.float64) * 2.0
    positions = torch.tensor([[0.05, 0.05, 0.05], [1.95, 0.05, 0.05]], dtype=torch.float64)
    np.testing.assert_allclose(scripted(positions, box, 0).numpy(), [[0.05, 0.05, 0.05], [-0.05, 0.05, 0.05]])


def test_central_atom_is_the_atom_nearest_the_centroid():
    positions = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.45, 0.1, 0.0], [2.0, 0.0, 0.0]])
    assert central_atom(positions) == 1  # centroid (0.8625, 0.025, 0)
