"""A minimal out-of-tree pappus backend (see README.md)."""
