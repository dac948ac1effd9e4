"""Stage 2 (teacher): an Instant-NGP radiance field trained through nerfacc, and
stage 3 (distill): pseudo-views rendered from it."""
