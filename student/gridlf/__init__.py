"""Student kind `gridlf`: the surface-anchored tri-plane light field.

- march.py: where along each pixel's ray the scene is, in ops the web backends run fast;
- surfaces.py: the teacher's occupied cells and mean density, packed for the march;
- features.py: tri-plane lookups and the view direction's encoding;
- far.py: what a pixel sees beyond the scene box, for a scene with surroundings;
- model.py: GridLightField, the nn.Module (settings: `student.gridlf`, GridLFConfig);
- reference.py: the slow twins of the fast paths, which the tests compare against.
"""

from .model import GridLightField

__all__ = ["GridLightField"]
