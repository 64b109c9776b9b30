"""Batches of API requests run offline: OpenAI's /v1/batches and `forgeml batch run`."""
