"""Stage 2 (teacher): an Instant-NGP radiance field trained through nerfacc (stage.py), and the
library the later stages render it with (model.py, field.py, render.py, sampler.py, hashgrid.py)."""
