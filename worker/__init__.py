"""enos-import: bulk device import for EnOS."""
