"""Paper tables and plots from finished runs: ``python -m lunar_exp.table <dir>``.

``runs`` reads run dirs (or W&B runs, ``wandb_runs``) into :class:`runs.RunRecord` objects and a
tidy frame; ``render`` aggregates over seeds and writes Markdown, LaTeX or CSV in the column layout
of ``conf/table/paper.yaml`` (``layout``); ``plots`` draws the PNGs.
"""
