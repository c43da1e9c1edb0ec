"""End-to-end tests: each runs `python -m lunar_exp` (or a script) in a child process."""
