"""The notebook user: `make lab` (--allow-root exactly when run as root), the environments the kit is installed
from (make setup, conda, Binder) asking for the same, jupyterlab-myst loaded by this JupyterLab, the book's launch
buttons, and a notebook run through JupyterLab's UI in the project's Chromium: no error under any cell, MyST
rendered, the filter's explorer answering a click."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import check_book  # noqa: E402

ANSI = re.compile(r"\x1b\[[0-9;]*m")


# ---------------------------------------------------------------- make lab, the extension, the environments
def _lab_command(*make_args: str) -> str:
    done = subprocess.run(["make", "-n", "lab", *make_args], cwd=REPO, capture_output=True, text=True, check=True)
    return next(line for line in done.stdout.splitlines() if "jupyter lab" in line and "echo" not in line)


def test_make_lab_allows_root_only_as_root_and_passes_lab_flags():
    line = _lab_command()
    assert "--notebook-dir=notebooks" in line.split()
    assert ("--allow-root" in line.split()) == (os.geteuid() == 0)
    assert _lab_command("LAB_FLAGS=--ip 0.0.0.0 --port 8888").split()[-4:] == ["--ip", "0.0.0.0", "--port", "8888"]


def test_jupyterlab_myst_is_a_prebuilt_extension_this_jupyterlab_loads():
    """Prebuilt: its frontend ships inside the wheel (no Node build at install); compatible: JupyterLab's own check
    of the shared packages it needs (2.7.0 fails it on JupyterLab 4.6, see pyproject.toml)."""
    assert (Path(sys.prefix) / "share/jupyter/labextensions/jupyterlab-myst/package.json").is_file()
    done = subprocess.run(
        [sys.executable, "-m", "jupyterlab.labextensions", "list"], capture_output=True, text=True, check=True
    )
    listing = ANSI.sub("", done.stdout + done.stderr)
    assert re.search(r"jupyterlab-myst v[\d.]+ enabled\s+OK \(python, jupyterlab_myst\)", listing), listing


def _pip_requirements(script: str) -> set[str]:
    """The requirements of a script's `pip install` lines, normalised: quotes and spaces out, extras sorted
    ('-e ".[test,book]"' -> '-e .[book,test]'); options and their values (an index URL) left out."""
    found = set()
    for line in script.splitlines():
        if "pip install" not in line or "--upgrade pip" in line:
            continue
        words = iter(shlex.split(line.split("pip install", 1)[1]))
        for w in words:
            if w == "-e":
                found.add(_normal(f"-e {next(words)}"))
            elif w in ("--index-url", "--extra-index-url", "-r", "-c"):
                next(words)
            elif not w.startswith("-"):
                found.add(_normal(w))
    return found


def _normal(req: str) -> str:
    req = req.replace('"', "").replace("'", "").replace(" ", "").replace("-e", "-e ", 1)
    m = re.match(r"^(.*)\[(.*)\]$", req)
    return f"{m.group(1)}[{','.join(sorted(m.group(2).split(',')))}]" if m else req


def _make_setup() -> set[str]:
    """What `make setup` pip-installs into .venv: the pip lines of the Makefile's .installed recipe."""
    return _pip_requirements(REPO.joinpath("Makefile").read_text().split("$(VENV)/.installed:")[1].split("\n\n")[0])


def test_conda_environment_asks_for_what_make_setup_installs():
    make = _make_setup()
    assert {"torch==2.14.1", "torchvision==0.29.1", "-e .[book,test]"} == make  # the parser found every pip line
    env = yaml.safe_load(REPO.joinpath("environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert {_normal(r) for r in pip} == make, "environment.yml and the Makefile's pip lines ask for different things"
    assert "python=3.11" in env["dependencies"]  # CI's Python; gco-wrapper's wheels stop at cp311


def test_binder_installs_the_same_torch_and_the_notebooks_extras():
    post = REPO / "binder" / "postBuild"
    assert os.access(post, os.X_OK), "binder/postBuild must be executable: repo2docker runs it as a program"
    pins = {r for r in _make_setup() if "==" in r}
    assert _pip_requirements(post.read_text()) == pins | {"-e .[book]"}
    env = yaml.safe_load(REPO.joinpath("binder", "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]


# ---------------------------------------------------------------- the book's launch buttons (Binder, Colab)
def _tiny_book(folder: Path) -> Path:
    """The book's _config.yml, extensions and bibliography around one executed notebook page."""
    import shutil

    for name in ("_config.yml", "references.bib", "book/_ext", "book/references.md"):
        src, dst = REPO / name, folder / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_markdown_cell("# A page\n\nText {cite}`islam2025diffcoremix`.")]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    (folder / "notebooks").mkdir()
    nbformat.write(nb, folder / "notebooks" / "00_method.ipynb")
    (folder / "book" / "intro.md").write_text("# Intro\n")
    (folder / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nchapters:\n  - file: notebooks/00_method\n  - file: book/references\n"
    )
    return folder


@pytest.mark.slow
def test_launch_buttons_open_the_publishing_repositorys_notebook_and_a_local_build_has_none(tmp_path):
    """The workflows that publish the book give it the repository (DIFFCORE_REPOSITORY_URL); without it Jupyter
    Book's default would send the buttons to jupyter-book's own repository, so there are none."""
    for flow in ("book.yml", "paper-book.yml"):
        jobs = yaml.safe_load(REPO.joinpath(".github", "workflows", flow).read_text())["jobs"]
        env = next(iter(jobs.values()))["env"]
        assert env["DIFFCORE_REPOSITORY_URL"] == "${{ github.server_url }}/${{ github.repository }}", flow
    jb = Path(sys.executable).with_name("jupyter-book")
    pages = {}
    for name, extra in (("published", {"DIFFCORE_REPOSITORY_URL": "https://github.com/owner/kit"}), ("local", {})):
        book = _tiny_book(tmp_path / name)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DIFFCORE_REPOSITORY")} | extra
        done = subprocess.run([str(jb), "build", str(book), "-W", "-n"], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stdout[-3000:]
        pages[name] = (book / "_build" / "html" / "notebooks" / "00_method.html").read_text()
    links = set(re.findall(r'href="(https://(?:mybinder|colab)[^"]+)"', pages["published"]))
    assert links == {
        "https://mybinder.org/v2/gh/owner/kit/main?urlpath=lab/tree/notebooks/00_method.ipynb",
        "https://colab.research.google.com/github/owner/kit/blob/main/notebooks/00_method.ipynb",
    }
    assert not re.search(r'href="https://(mybinder|colab)', pages["local"])
    assert "executablebooks/jupyter-book" not in pages["local"]


# ---------------------------------------------------------------- JupyterLab in Chromium
MARKDOWN = (
    "# A page as the book writes it\n\n"
    "DiffCoRe-Mix {cite}`islam2025diffcoremix` keeps an attempt when $S > \\tau_k$ (Eq. 5):\n\n"
    "$$R(\\mathcal{G}_i) = [S(\\mathcal{I}_i, \\mathcal{G}_i) > \\tau_k]$$\n\n"
    "```{note}\nAn admonition, as on the book's landing page.\n```\n"
)
CODE = [
    "from diffcore.book import figures\nfigures.live_frontend()",
    'figures.explore("generated")  # the set of an ImageFolder: the real images come from its files',
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, proc: subprocess.Popen, log: Path, seconds: float = 90) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if proc.poll() is not None:
            pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if json.loads(r.read()).get("started"):
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"jupyter lab did not answer {url} in {seconds:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab as `make lab` starts it (--allow-root as root), headless, on a free port with a token, serving a
    folder of its own: a notebook of MyST, diffcore and the explorer, and a generated set (standins), so nothing is
    written into the repository, the user's settings or their workspaces."""
    chromium = check_book.chromium_path()
    if chromium is None:
        pytest.skip("no Chromium: scripts/install_chromium.sh (make setup) could not unpack Debian's chromium here")
    from standins import every_outcome_set

    tmp = tmp_path_factory.mktemp("lab")
    root, settings = tmp / "root", tmp / "settings" / "@jupyterlab" / "apputils-extension"
    every_outcome_set(root)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(MARKDOWN)])
    nb.cells += [nbformat.v4.new_code_cell(c) for c in CODE]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "probe.ipynb")
    settings.mkdir(parents=True)  # no "get Jupyter news?" prompt over the cells
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    port, token = _free_port(), "diffcore-lab-test"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}"]
    cmd += [f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}"]
    cmd += [f"--LabApp.user_settings_dir={tmp / 'settings'}", f"--LabApp.workspaces_dir={tmp / 'workspaces'}"]
    cmd += ["--allow-root"] if os.geteuid() == 0 else []
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"), "OMP_NUM_THREADS": "1"}
    log = tmp / "lab.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
    try:
        _wait_for_server(f"http://127.0.0.1:{port}/api/status?token={token}", proc, log)
        yield {"url": f"http://127.0.0.1:{port}/lab/tree/probe.ipynb?token={token}", "chromium": chromium, "tmp": tmp}
    finally:
        proc.terminate()  # the server shuts its kernels down on SIGTERM
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


# The kernel connected and idle: the status bar's "Python 3 (ipykernel) | Idle" (the toolbar's indicator already
# reads idle while the status bar still says "No Kernel | Initializing", and cells run then are lost)
IDLE = (
    "() => [...document.querySelectorAll('.jp-StatusBar-TextItem')].some(e => "
    "/[|] Idle$/.test(e.innerText.trim()) && !e.innerText.startsWith('No Kernel'))"
)
# Every code cell ran ("[n]:"), or one failed (Run All stops there). textContent, not innerText: JupyterLab leaves the
# cells outside the viewport unrendered (content-visibility), and their innerText is empty
STDERR = ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
ALL_RAN = (
    "() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].every(p => /\\[\\d+\\]/.test(p.textContent))"
    f' || document.querySelector("{STDERR}") !== null'
)


@pytest.mark.slow
def test_a_notebook_runs_in_jupyterlab_with_myst_rendered_and_the_explorer_live(lab):
    from playwright.sync_api import sync_playwright

    shots = lab["tmp"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(lab["chromium"]), args=check_book.FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            page.goto(lab["url"])
            page.wait_for_function(IDLE, timeout=90_000)  # the notebook open, its kernel started
            page.get_by_role("menuitem", name="Run", exact=True).click()  # as a reader: Run > Run All Cells
            page.locator(".lm-Menu-item[data-command='runmenu:run-all']").click()
            page.wait_for_function(ALL_RAN, timeout=120_000)
            page.wait_for_function(IDLE, timeout=120_000)
            bad = page.locator(STDERR).all_text_contents()
            assert not bad, f"a cell shows an error or a warning: {bad}"
            outputs = page.locator(".jp-OutputArea-output").all_text_contents()
            assert "True" in [o.strip() for o in outputs]  # figures.live_frontend() in JupyterLab's kernel

            md = page.locator(".jp-MarkdownCell .myst").first  # jupyterlab-myst's rendering, not the plain one
            text = md.inner_text()
            assert "islam2025diffcoremix" in text and "{cite}" not in text and "`" not in text
            assert md.locator(".katex").count() >= 2 and "\\tau_k" not in text  # inline and display math
            assert md.locator("aside.myst-admonition").count() == 1
            page.screenshot(path=str(shots / "lab-myst.png"))

            view = page.locator(".jp-OutputArea-output img[src^='data:image/png']").last
            view.wait_for(timeout=30_000)
            assert page.locator(".widget-dropdown select").count() == 2  # class and source
            shown = page.locator(".jp-OutputArea-output[data-mime-type='text/html']").last
            assert "source train/a/2.png: the real image and its 3 attempt(s)" in shown.inner_text()
            page.locator(".widget-toggle-buttons button", has_text="kept at once").click()  # the kernel answers
            page.wait_for_function(
                "() => [...document.querySelectorAll('.jp-OutputArea-output')].some("
                "o => o.innerText.includes('source train/a/0.png: the real image and its 1 attempt(s)'))",
                timeout=30_000,
            )
            assert page.locator(".widget-dropdown select").nth(1).input_value().startswith("train/a/0.png: ")
            page.locator(".jp-OutputArea-output table").last.scroll_into_view_if_needed()
            page.screenshot(path=str(shots / "lab-explorer.png"))
            assert not errors, errors
        except Exception:
            page.screenshot(path=str(shots / "failure.png"), full_page=True)
            print(f"JupyterLab test: screenshot and server log in {shots}")
            raise
        finally:
            browser.close()
