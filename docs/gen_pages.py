"""mkdocs-gen-files script: writes the generated reference pages at build time."""

import sys
from pathlib import Path

import mkdocs_gen_files

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_pages  # noqa: E402

for name, make in (("reference/config.md", reference_pages.config_reference),
                   ("reference/cli.md", reference_pages.cli_reference),
                   ("benchmarks.md", reference_pages.benchmarks_page)):
    with mkdocs_gen_files.open(name, "w") as f:
        f.write(make())

for figure in reference_pages.benchmark_figures():
    with mkdocs_gen_files.open(figure.name, "wb") as f:
        f.write(figure.read_bytes())
