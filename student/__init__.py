"""Stage 4 (student): a NeLF network of the MobileR2L family trained on pseudo-views."""
