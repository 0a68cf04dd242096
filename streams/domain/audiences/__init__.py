"""Audiences for ad platforms: platform hashing, destinations, consent and the audience state."""
