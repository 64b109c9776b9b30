"""Importing this module registers the monitoring stages (see forgeml.core.stages)."""

from forgeml.monitor import campaign, reference  # noqa: F401
