"""`python -m diffcore.reproduce`: the main job, every notebook of `notebooks/` through papermill, then the book.

    python -m diffcore.reproduce --profile embedded --out runs/embedded        # everything (what `make` runs)
    python -m diffcore.reproduce --only 02_table3 --out runs/embedded          # re-run one notebook, rebuild the book
    python -m diffcore.reproduce --profile paper --weights /w --data /d --out runs/paper   # on a GPU machine

Steps: (1) with --main only, `diffcore run` first (the main job: 3 seeds of vanilla / DiffCoRe-Mix-50 / -100,
whose generated set and results the notebooks then reuse); (2) each notebook executed into <out>/notebooks/ with a
progress line; the first error stops the run with a non-zero exit and prints the failing cell; (3) Jupyter Book
built from the executed notebooks into <out>/book/_build/html (warnings are errors). The notebooks share one
generated set per dataset and one results folder per training setting, so each counterpart and each run is made
once (a re-run skips what exists).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
# what the book is built from: benchmarks/ (book/benchmarks.md includes its README) and the tiny models' samples
BOOK_FILES = ["_config.yml", "_toc.yml", "references.bib", "book", "benchmarks", "diffcore/assets/tiny-samples.png"]

# Every notebook in seconds rather than minutes: tiny subsets, one epoch, a few methods (tests and CI).
QUICK = {
    "few_shot": 3,
    "epochs": 1,
    "seeds": [0],
    "methods": ["Vanilla", "Mixup", "R50 + GenAug", "DiffCoRe-Mix-100"],
    "fractions": [0.5, 1.0],
    "steps": 2,
    "warmup": 1,
    "batch_sizes": [16, 32],
    "pretrain_epochs": 1,
    "n_images": 4,
    "per_class": 2,
}


def notebooks(only: list[str] | None = None) -> list[Path]:
    """The source notebooks in reading order; `only`: those whose name starts with one of the given prefixes."""
    found = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if only:
        chosen = [p for p in found if any(p.name.startswith(o) or p.stem == o for o in only)]
        unknown = [o for o in only if not any(p.name.startswith(o) or p.stem == o for p in found)]
        if unknown:
            raise SystemExit(f"reproduce: no notebook named {unknown}; expected prefixes of {[p.stem for p in found]}")
        return chosen
    return found


def parameters_for(path: Path, given: dict) -> dict:
    """Only the parameters the notebook declares in its `parameters` cell (papermill would inject any name)."""
    import papermill as pm

    declared = pm.inspect_notebook(str(path))
    return {k: v for k, v in given.items() if k in declared}


def main_job(profile: str, out: Path, params: dict) -> None:
    """`diffcore run` into <out>: the generated set and the vanilla / -50 / -100 results the notebooks reuse."""
    from . import experiment as X
    from .profiles import profile as preset

    root = params.get("data_roots", {}).get(preset(profile)["dataset"])
    exp = X.experiment(profile, **params.get("overrides", {}), device=params.get("device"), data_root=root)
    print(f"[main] {X.command_line(exp, 'run', out=out)}", flush=True)
    try:
        print(X.main_job(exp, out)["markdown"])
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"reproduce: the main job failed: {e}") from None


@contextlib.contextmanager
def kernel_stderr_filtered():
    """The kernel inherits our stderr; its transport warning on every start is noise between progress lines."""
    sys.stderr.flush()
    saved, tmp = os.dup(2), tempfile.TemporaryFile()
    os.dup2(tmp.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        tmp.seek(0)
        lines = tmp.read().decode(errors="replace").splitlines()
        print("\n".join(x for x in lines if "Kernel is running over TCP" not in x), file=sys.stderr, end="")


def execute(path: Path, out: Path, params: dict) -> float:
    """Run one notebook with papermill into <out>/notebooks/; returns seconds. Exits on the first failing cell."""
    import papermill as pm

    dst = out / "notebooks" / path.name
    dst.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        with kernel_stderr_filtered():
            pm.execute_notebook(
                str(path),
                str(dst),
                parameters=parameters_for(path, params),
                kernel_name="python3",
                cwd=str(REPO),
                progress_bar=False,
                log_output=False,
            )
    except pm.PapermillExecutionError as e:
        tb = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(e.traceback[-4:]))  # the kernel's colours, removed
        print(
            f"\nFAILED: {path.name}, cell {e.cell_index} (executed copy: {dst})\n--- cell source ---\n{e.source}\n"
            f"--- error ---\n{e.ename}: {e.evalue}\n{tb}",
            file=sys.stderr,
        )
        raise SystemExit(1) from None
    return time.perf_counter() - t0


FOOTERS = {
    "paper": "Numbers from the paper profile: the paper's datasets and models from local files, each run as its "
    "page's 'what ran' table says (schedule, hardware, command)."
}


def build_book(out: Path, notice: str | None = None, profile: str = "embedded") -> Path:
    """Stage the book sources with the executed notebooks in <out>/book and build it; warnings fail the build.
    notice: a line every page shows at its top (the theme's announcement bar), e.g. the rehearsal's."""
    stage = out / "book"
    missing = [p.name for p in notebooks() if not (out / "notebooks" / p.name).is_file()]
    if missing:
        raise SystemExit(
            f"reproduce: book not built, {missing} not executed yet in {out}/notebooks (run without --only first)"
        )
    for name in BOOK_FILES:
        src, dst = REPO / name, stage / name
        if not src.exists():
            continue
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    shutil.copytree(out / "notebooks", stage / "notebooks", dirs_exist_ok=True)
    import yaml

    cfg = yaml.safe_load((stage / "_config.yml").read_text())
    mathjax = REPO / ".venv" / "mathjax"  # scripts/install_mathjax.sh (make setup): equations render offline
    if (mathjax / "tex-chtml.js").is_file():
        shutil.copytree(mathjax, stage / "_static" / "mathjax", dirs_exist_ok=True)
        sphinx = cfg.setdefault("sphinx", {}).setdefault("config", {})
        sphinx.update(mathjax_path="mathjax/tex-chtml.js", html_static_path=["_static"])
    if profile != "embedded":  # the sources' footer speaks of the embedded profile's stand-in numbers
        cfg.setdefault("html", {})["extra_footer"] = FOOTERS.get(profile, "")
    if notice:
        cfg.setdefault("html", {})["announcement"] = notice  # sphinx-book-theme: a bar at the top of every page
    (stage / "_config.yml").write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    shutil.rmtree(stage / "_build", ignore_errors=True)  # a stale page must never hide a failed one
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb), "build", str(stage), "--builder", "html", "-W", "-n", "--keep-going"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        print(done.stdout[-6000:], done.stderr[-6000:], sep="\n", file=sys.stderr)
        raise SystemExit(f"reproduce: the book build failed (warnings are errors): {' '.join(cmd)}")
    html = stage / "_build" / "html"
    shutil.make_archive(str(html / "notebooks-with-outputs"), "zip", out, "notebooks")  # the landing page links it
    return html / "index.html"


def strip_outputs(paths: list[Path]) -> None:
    """Source notebooks are committed without outputs: clear them (after running one in JupyterLab)."""
    import nbformat

    for p in paths:
        nb = nbformat.read(p, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)
            cell.metadata.pop("papermill", None)
        nb.metadata.pop("papermill", None)
        nbformat.write(nb, p)


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m diffcore.reproduce", description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="embedded", choices=["embedded", "paper"])
    ap.add_argument("--out", help="build folder (default runs/<profile>)")
    ap.add_argument(
        "--only", nargs="+", metavar="NAME", help="run only these notebooks (name prefixes, e.g. 02_table3)"
    )
    ap.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a notebook parameter for every notebook that declares it; VALUE is JSON, e.g. seeds=[0,1,2]",
    )
    ap.add_argument("--params-file", help="JSON object of notebook parameters")
    ap.add_argument(
        "--weights",
        help="paper profile: folder with cosxl.safetensors, sdxl-base-1.0/, sdxl-vae-fp16-fix/, "
        "clip-vit-b-32/open_clip_model.safetensors, wide_resnet101_2.pth (Table 5), instruct-pix2pix/ (DiffuseMix)",
    )
    ap.add_argument("--data", help="paper profile: folder with one sub-folder per dataset (cub-200-2011/, ...)")
    ap.add_argument("--device", help="auto | cpu | cuda")
    ap.add_argument(
        "--main",
        action="store_true",
        help="run the main job (`diffcore run`, 3 seeds) first; the "
        "notebooks reuse its generated set and results (otherwise they make what they need, seeds [0])",
    )
    ap.add_argument("--no-book", action="store_true", help="execute the notebooks only")
    ap.add_argument("--notice", help="a line shown at the top of every page of the book (e.g. a rehearsal's)")
    ap.add_argument("--quick", action="store_true", help="tiny subsets and one epoch: a smoke run in a few minutes")
    ap.add_argument("--strip", action="store_true", help="clear the outputs of notebooks/*.ipynb and exit")
    return ap.parse_args(argv)


def notebook_path(path: Path) -> str:
    """A path as the notebooks are given it (they run in the repository root): relative to it when inside it, so
    that no page shows the build machine's folders (e.g. make's runs/embedded)."""
    try:
        return str(Path(path).resolve().relative_to(REPO.resolve()))
    except ValueError:
        return str(path)


def gather_params(a: argparse.Namespace, out: Path) -> dict:
    params = {"profile": a.profile, "out_dir": notebook_path(out)}
    params.update(QUICK if a.quick else {})
    from .plan.jobs import paper_paths

    params.update(paper_paths(a.weights, a.data))
    if a.params_file:
        params.update(json.loads(Path(a.params_file).read_text()))
    for item in a.param:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--param {item!r}: expected KEY=VALUE")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    if a.device:
        params["device"] = a.device
    return params


def main(argv=None) -> int:
    a = parse(argv)
    if a.strip:
        strip_outputs(notebooks())
        return 0
    os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars inside the pages (kernels inherit this)
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    out = Path(a.out or f"runs/{a.profile}").resolve()
    params = gather_params(a, out)
    chosen = notebooks(a.only)
    t_all, timings = time.perf_counter(), {}
    if a.main and not (out / "table.md").is_file():
        t0 = time.perf_counter()
        main_job(params["profile"], out, params)
        timings["main job"] = time.perf_counter() - t0
    for i, path in enumerate(chosen, 1):
        print(f"[{i}/{len(chosen)}] {path.name} ...", end=" ", flush=True)
        timings[path.name] = execute(path, out, params)
        print(f"ok ({timings[path.name]:.0f} s)", flush=True)
    if not a.no_book:
        print("[book] jupyter-book build (warnings are errors) ...", end=" ", flush=True)
        t0 = time.perf_counter()
        index = build_book(out, a.notice, a.profile)
        timings["book"] = time.perf_counter() - t0
        print(f"ok ({timings['book']:.0f} s)\nthe book: {index}")
    timings["total"] = time.perf_counter() - t_all
    from .engine.checks import json_text

    (out / "reproduce.json").write_text(json_text({"seconds": timings, "params": params, "argv": sys.argv}, indent=2))
    print(f"done in {timings['total']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
