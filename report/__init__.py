"""Stage 6: videos and the comparison page, written into the viewer site (stage.py)."""
