"""Question-answer benchmarks: the synthetic graph and PISTOL-style qa_json, one evaluation."""
