"""Fault attribution lives in core (``pappus.engine.faults``); re-exported here for compatibility."""

from pappus.engine.faults import ADDRESS_UNRELIABLE, Attribution, FaultAttributor

__all__ = ["ADDRESS_UNRELIABLE", "Attribution", "FaultAttributor"]
