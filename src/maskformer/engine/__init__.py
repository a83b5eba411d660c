"""Training and prediction loops."""
