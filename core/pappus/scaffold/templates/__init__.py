"""Template files of the plugin skeleton (package data; see :mod:`pappus.scaffold`)."""
