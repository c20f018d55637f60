"""mkdocs hook: a page's links to repository files open them in the repository on the site.

The pages link to files of the repository outside docs/ relative to the page, as GitHub
renders them (``[webhook.py](../examples/webhook.py)``). The site has no such files, so
before mkdocs checks a page's links this hook rewrites each link to an existing repository
file or folder into ``{repo_url}/blob/main/<path>`` (``tree/`` for a folder). A link to a
missing file is left as it is: mkdocs' link validation (mkdocs.yml) warns about it, and a
warning fails the strict build (tests/test_docs_examples.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

BRANCH = "main"
FENCE = re.compile(r"^( *)(```|~~~).*?^\1\2[^\n]*$", re.S | re.M)
LINK = re.compile(r"(?<!!)(\[[^\]]*\]\()([^)\s#]+)(#[^)\s]*)?\)")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def repository_url(target: str, page_dir: Path, docs: Path, root: Path, repo: str) -> str | None:
    """The repository URL for a relative link ``target`` of a page in ``page_dir``.

    None when the link is not one to rewrite: absolute, to a docs page, outside the
    repository, or to a path that does not exist.
    """
    if SCHEME.match(target) or target.startswith("/"):
        return None
    path = (page_dir / target).resolve()
    if path.is_relative_to(docs) or not path.is_relative_to(root) or not path.exists():
        return None
    kind = "tree" if path.is_dir() else "blob"
    return f"{repo}/{kind}/{BRANCH}/{path.relative_to(root).as_posix()}"


def on_page_markdown(markdown: str, *, page: Any, config: Any, files: Any) -> str:
    """Rewrite the page's links to repository files outside docs/, outside code blocks."""
    repo = (config["repo_url"] or "").rstrip("/")
    if not repo:
        return markdown
    docs = Path(config["docs_dir"]).resolve()
    root = Path(config["config_file_path"]).resolve().parent
    page_dir = (docs / page.file.src_path).parent

    def rewrite(match: re.Match[str]) -> str:
        url = repository_url(match[2], page_dir, docs, root, repo)
        if url is None:
            return match[0]
        return f"{match[1]}{url}{match[3] or ''})"

    parts: list[str] = []
    end = 0
    for fence in FENCE.finditer(markdown):
        parts.append(LINK.sub(rewrite, markdown[end : fence.start()]))
        parts.append(fence[0])
        end = fence.end()
    parts.append(LINK.sub(rewrite, markdown[end:]))
    return "".join(parts)
