"""Objects a hostile file could carry, for the tests that check diffcore never runs them."""

import os


class RunsAShellCommand:
    """Unpickling it runs `touch <marker>`: if the marker exists afterwards, a pickle was trusted."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling calls os.system("touch <marker>")
        return os.system, (f"touch {self.marker}",)
