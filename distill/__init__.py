"""Stage 3: pseudo-views rendered from the teacher (stage.py), and how their poses are drawn (poses.py)."""
