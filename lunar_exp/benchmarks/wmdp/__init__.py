"""WMDP: hazardous-knowledge corpora to forget, scored by multiple choice through lm-eval."""
