"""The conformance suite's tests, one module per isolation property (see ``properties.py``)."""
