"""Data-subject requests across the stores (docs/privacy.md): erasure with its proof."""
