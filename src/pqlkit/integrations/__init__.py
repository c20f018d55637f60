"""Framework integrations, each an optional extra, imported only when you import it.

* :mod:`pqlkit.integrations.flask`: an ``init_app`` extension (``pip install 'pqlkit[flask]'``);
* :mod:`pqlkit.integrations.django`: a Django app with the ``pqlkit_sweep``
  management command (``pip install 'pqlkit[django]'``).

Importing one without its framework installed raises an ``ImportError`` that
names the extra to install.
"""

from __future__ import annotations

__all__ = ["missing_extra"]


def missing_extra(module: str, framework: str, extra: str) -> ImportError:
    """The error raised when ``module`` is imported without ``framework`` installed."""
    return ImportError(
        f"{module} needs {framework}, which is not installed: pip install 'pqlkit[{extra}]'",
        name=module,
    )
