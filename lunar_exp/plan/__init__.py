"""The memory planner: ``python -m lunar_exp.plan <overrides>`` (docs/gpu.md).

It composes the same Hydra config as a run and estimates, without loading any weights, the peak
memory per GPU of every stage the run would go through (fine-tuning, unlearning, evaluation),
split into weights, gradients, optimizer states, activations and reference; when the peak does
not fit ``plan.gpu_gib`` it lists the settings that would make it fit, each with its estimate.
``arch.py`` finds the architecture (config.json, GGUF metadata or a built-in table),
``lengths.py`` the token lengths, ``estimate.py`` the memory model, ``report.py`` the output.
"""
