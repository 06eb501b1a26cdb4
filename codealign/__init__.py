"""codealign: better code LLMs from execution feedback.

The repository keeps the design's folders at its top level (actors/, trainers/, pipeline/, sandbox/, evaluation/,
exercises/) and this folder holds the ground they share (config, records, chat format, weights). Installed, they
are all one package: `codealign.actors`, `codealign.trainers`, ... (pyproject's package-dir). In a checkout or an
editable install the same names resolve by adding the checkout's root to this package's search path.
"""

from pathlib import Path

_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "sandbox" / "__init__.py").is_file() and (_checkout / "pyproject.toml").is_file():
    __path__.append(str(_checkout))  # noqa: F821 (a package's own __path__)
