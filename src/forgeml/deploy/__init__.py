"""Deployment bundles: a model packaged to run somewhere forgeml is not installed."""
