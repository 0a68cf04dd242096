"""Use cases measured like experiments: arms, sufficient statistics, lift with confidence, reports."""
