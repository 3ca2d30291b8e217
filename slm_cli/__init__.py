"""slm_cli."""
