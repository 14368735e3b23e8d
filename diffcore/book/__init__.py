"""The book's code: which runs make our side of each table and the tables that put them beside the paper's
(`tables`), the figures (`figures`) and the paper's claims with their verdicts (`claims`). The paper's numbers and
each table's jobs are the plan's (diffcore.plan). The notebooks in `notebooks/` are thin drivers over these and over
the experiment API (diffcore.experiment)."""

import warnings

with warnings.catch_warnings():  # a notebook kernel has no ipywidgets: tqdm.auto's warning says nothing to a reader
    warnings.simplefilter("ignore")
    import tqdm.auto  # noqa: F401
