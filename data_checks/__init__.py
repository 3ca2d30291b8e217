"""data_checks."""
