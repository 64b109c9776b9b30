"""`forgeml plan`: what a recipe will cost before any compute is spent (estimate.py)."""
