"""Stage 4 (student): a NeLF network trained on pseudo-views; the interface and registry of
student kinds are in kinds.py, the MobileR2L family (kind `mobiler2l`) in model.py."""
