"""Membership inference: LOSS, shadow models, LiRA and RMIA, all computed from one signal matrix."""
