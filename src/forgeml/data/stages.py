"""Importing this module registers the data stages (see forgeml.core.stages)."""

from forgeml.data import assess, clean, from_feedback, ingest, mixture  # noqa: F401
from forgeml.data.synthesis import stage as synthesis_stage  # noqa: F401
