"""Run bookkeeping: cache, outputs, resume, sweep variants, offline checks, errors, loggers."""
