"""What a pixel sees beyond the scene box: the far field of a scene with surroundings.

A capture without masks (a walk around an object in a room, a forward-facing shot) shows
surfaces the scene box does not hold. The teacher covers them in contracted space
(teacher/space.py: the box's inscribed ball keeps its coordinates, the rest of space is squeezed
into a shell around it). The student reads K points along each ray beyond the box, each from a
2-D grid of its own, and a small MLP maps their features and the view direction to the colour
behind the near surface.

A 360 scene's points are where the ray leaves K spheres about the box centre (a multi-sphere
image), at equal steps in disparity from the box's inscribed ball out to infinity: the shells the
teacher's contraction spaces equally, the last the ray's direction alone. Each sphere's grid is
an octahedral map of the direction from the centre (`sphere_points`). A forward-facing scene is
seen from one side through a narrow fan of directions: its points lie on K planes facing the
capture's mean camera (LightSpeed's light slab), at the same disparities, each grid spread over
the angles the pseudo-views see (`slab_points`). Both replaced K contracted points reading
tri-planes over the contracted ball, where a plane's projection piles far-apart directions into
the same cells: in equal time the spheres came 0.55 dB closer to the teacher on the unmasked
cape, the planes 0.7 dB on its forward-facing photos, each with a faster frame (docs/DESIGN.md).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .march import exact_matmul

__all__ = ["FAR_STRIDE", "far_disparities", "octahedral", "slab_points", "sphere_points"]

# one far ray per FAR_STRIDE x FAR_STRIDE pixels (each pixel takes its block's colour): the far
# field cost 4x less this way, the frame on WASM at the capture profile's 128 px needs it, and
# what lies beyond the box is coarse in the teacher too (docs/DESIGN.md, "the far field")
FAR_STRIDE = 2


def far_disparities(k: int) -> list[float]:
    """u_j = (k - 1 - j) / k, j < k: the disparity (base distance / distance) of each far point;
    the last is 0 (infinity), so k = 1 is an environment over direction alone."""
    return [(k - 1 - j) / k for j in range(k)]


def slab_points(origin: Tensor, d: Tensor, rotation: Tensor, centre: Tensor, depth: float,
                bound: Tensor, k: int) -> Tensor:
    """Where rays origin + t d (..., 3) cross k planes parallel to the mean camera's image plane
    (LightSpeed's light slab, a forward-facing scene's far field), as seen from the mean camera:
    (x/z, y/z) in its frame (rotation: its axes as columns, x right, y up, z back; centre: its
    eye), mapped from [-bound, bound] to [0, 1] -> (..., k, 2).

    Plane j sits at depth depth / u_j, u_j = (k - 1 - j) / k (equal steps in disparity, the last
    at infinity, where the crossing is the direction alone). With the ray's local origin o, its
    depth o_z (forward) and q = d_xy / d_z, the crossing at depth z is o_xy + (z - o_z) q, and
    divided by z: q + u (o_xy - o_z q) / depth, finite at u = 0. The slow twin is
    `reference.slab_points_reference`."""
    o = exact_matmul(origin - centre, rotation)  # (..., 3) in the mean camera's frame
    v = exact_matmul(d, rotation)
    # rays of a forward-facing view look along -z; one more than 84 degrees off it lands beyond any
    # bound (kinds.slab_bound stops at 80 degrees) wherever the floor puts it, and the floor keeps the
    # division from magnifying rounding (torch and onnxruntime then pick the same cell)
    fwd = (-v[..., 2:3]).clamp(min=0.1)
    q = v[..., :2] / fwd  # (..., 2)
    a = (o[..., :2] + o[..., 2:3] * q) / depth  # o_z (forward) is -o[..., 2]
    u = (k - 1 - torch.arange(k, device=d.device, dtype=d.dtype)) / k  # far_disparities(k)
    x = q[..., None, :] + u[:, None] * a[..., None, :]  # (..., k, 2)
    return x / (2 * bound) + 0.5


def octahedral(n: Tensor) -> Tensor:
    """Directions n (..., 3), any length > 0, -> (..., 2) in [0, 1]^2: the octahedral map (the
    direction scaled to |x| + |y| + |z| = 1, the lower half (z < 0) folded out over the square's
    corners). One square holds every direction, the cells within 2x of each other's solid angle,
    with only Abs, Div and Where (no trigonometry in the graph). The slow twin is
    `reference.octahedral_reference`."""
    w = n / n.abs().sum(dim=-1, keepdim=True)
    x, y, z = w.unbind(dim=-1)
    one = torch.ones_like(x)
    fx = (1 - y.abs()) * torch.where(x >= 0, one, -one)
    fy = (1 - x.abs()) * torch.where(y >= 0, one, -one)
    lower = z < 0
    return torch.stack([torch.where(lower, fx, x), torch.where(lower, fy, y)], dim=-1) * 0.5 + 0.5


def sphere_points(origin: Tensor, d: Tensor, centre: Tensor, half: Tensor, k: int) -> Tensor:
    """Where rays origin + t d (..., 3) leave k spheres about the box centre, as octahedral-map
    coordinates of the direction from the centre (`octahedral`) -> (..., k, 2) in [0, 1].

    In the box's normalised coordinates sphere j has radius 1 / u_j, u_j = (k - 1 - j) / k: equal
    steps in disparity from the box's inscribed ball out to infinity, the shells the teacher's
    contraction spaces equally (for k = 4: radii 4/3, 2, 4, infinity). With the ray's origin p,
    unit direction v, b = p.v and m^2 = |p|^2 - b^2 (the ray's squared distance from the centre),
    the far root of |p + t v| = 1/u gives the direction u p + (sqrt(1 - u^2 m^2) - u b) v, finite at
    u = 0 (the direction alone); a ray that passes outside a sphere reads its closest point (the
    root clamped). The slow twin is `reference.sphere_points_reference`."""
    p = (origin - centre) / half
    v = d / half
    v = v / torch.sqrt((v * v).sum(dim=-1, keepdim=True))
    b = (p * v).sum(dim=-1, keepdim=True)  # (..., 1)
    m2 = ((p * p).sum(dim=-1, keepdim=True) - b * b).clamp(min=0.0)
    u = (k - 1 - torch.arange(k, device=d.device, dtype=d.dtype)) / k  # far_disparities(k)
    along = torch.sqrt((1.0 - u * u * m2).clamp(min=0.0)) - u * b  # (..., k)
    n = u[:, None] * p[..., None, :] + along[..., None] * v[..., None, :]  # (..., k, 3)
    return octahedral(n)
