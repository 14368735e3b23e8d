"""Launch buttons (Binder, Colab) on the notebook pages, only where the book knows its repository.

Jupyter Book builds a launch link from `repository: url:` in _config.yml, and the repository's address is written
nowhere in it (a fork publishes from its own). The workflows that publish the book give it:
.github/workflows/book.yml sets DIFFCORE_REPOSITORY_URL to `${{ github.server_url }}/${{ github.repository }}` and
DIFFCORE_REPOSITORY_BRANCH to the branch it builds; `make` passes both down to the book build. Without them (a local
build) the buttons are left out: Jupyter Book's default `repository: url:` is its own repository, so its launch
links would open jupyter-book's notebooks, not these.
"""

import os

URL, BRANCH = "DIFFCORE_REPOSITORY_URL", "DIFFCORE_REPOSITORY_BRANCH"


def repository(env: dict) -> tuple[str, str] | None:
    """(repository URL, branch) from the publishing workflow's environment, None outside it."""
    url = env.get(URL, "").strip().rstrip("/")
    if not url:
        return None
    if url.count("/") < 4:  # https://github.com/<org>/<repo>: the theme splits org and repo off its end
        raise ValueError(f"{URL}={url!r}: expected https://<host>/<org>/<repo>")
    return url, env.get(BRANCH, "").strip() or "main"


def _configure(app, config):
    options = config.html_theme_options
    found = repository(os.environ)
    if found:
        options["repository_url"], options["repository_branch"] = found
    else:  # no button rather than a button to jupyter-book's own repository
        buttons = options.get("launch_buttons", {})
        options["launch_buttons"] = {k: v for k, v in buttons.items() if not k.endswith("_url")}


def setup(app):
    app.connect("config-inited", _configure)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
