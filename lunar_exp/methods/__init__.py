"""Unlearning methods, one per file; configs in conf/method/ select them by ``_target_``."""
