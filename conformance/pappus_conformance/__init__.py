"""The pappus conformance suite: isolation properties any backend runs against itself."""
