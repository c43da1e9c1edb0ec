"""Multiple-choice suites through lm-eval (WMDP, MMLU), from the hub or local files."""
