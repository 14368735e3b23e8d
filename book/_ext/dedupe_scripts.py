"""Drop repeated <script> entries from every page.

With jupyter-book 1.0.4, sphinx-book-theme 1.3 and sphinx-thebe 0.3.1 the thebe configuration script
(`const THEBE_JS_URL = ...`) is added twice, and the second copy throws "Identifier 'THEBE_JS_URL' has already
been declared" in the browser on every page. The headless-Chromium check of the book fails on any script error,
so the duplicate is removed here, after sphinx-thebe has added its scripts. Likewise a local MathJax
(`mathjax_path`, reproduce.build_book) is added twice, once deferred and once not, and a second MathJax fails
("Cannot set property Package"): a script file is kept once, by its file name.
"""


def _dedupe(app, pagename, templatename, context, doctree):
    seen, kept = set(), []
    for script in context.get("script_files", []):
        # the copies differ only in filename None vs '' (body-only scripts), or only in attributes (a file)
        name = getattr(script, "filename", None) or ""
        key = name if name else repr(sorted(getattr(script, "attributes", {}).items()))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = kept


def setup(app):
    app.connect("html-page-context", _dedupe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
