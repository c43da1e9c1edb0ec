"""TOFU: fictitious authors, their splits and the official evaluation suite."""
