"""Stage 4 (student): a NeLF network trained on pseudo-views. The interface every kind
implements and the checkpoint are in kinds.py; the kinds: gridlf/ (the surface-anchored
tri-plane light field) and mobiler2l.py (the MobileR2L family)."""
