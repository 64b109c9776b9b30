"""Importing this module registers the monitoring stages (see forgeml.core.stages)."""

from forgeml.monitor import reference  # noqa: F401
