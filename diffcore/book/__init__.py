"""The book's code: the paper's numbers (`paper`), which runs make our side of each table and the tables that
put them beside the paper's (`tables`), and the figures (`figures`). The notebooks in `notebooks/` are thin
drivers over these and over the experiment API (diffcore.experiment)."""
