"""Mistral's classifier API: POST /v1/classifications and /v1/chat/classifications."""
