"""The package's source, in the book: `book/api.md` lists the functions each page calls (autodoc) and
sphinx.ext.viewcode renders their modules as highlighted pages, so every section can link to the code it runs
(`_modules/diffcore/<module>.html#<function>`), offline, checked like any other link.

The docstrings are plain text written for readers of the code, not reStructuredText: autodoc would parse them as
RST and warn (and the build treats warnings as errors), so they are left out here; the source pages show them.
"""


def _no_docstring(app, what, name, obj, options, lines):
    lines.clear()


def setup(app):
    app.connect("autodoc-process-docstring", _no_docstring)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
