"""Metrics built on two primitives: batched greedy generation and answer log-probabilities."""
