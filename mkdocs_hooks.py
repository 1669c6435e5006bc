"""MkDocs hook: links from docs/ to other files of the repository.

The pages link to files outside docs/ (`../bench/RESULTS.md`) so that they work when read
on a forge or in a checkout. The site has no such files: with `repo_url` set in mkdocs.yml
those links go to the file on the forge; without it they become the file's path as code.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    here = posixpath.dirname(page.file.src_uri)
    repo_url = (config.get("repo_url") or "").rstrip("/")

    def outside(match: re.Match[str]) -> str:
        text, target = match.groups()
        if "://" in target or target.startswith(("#", "/", "mailto:")):
            return match.group(0)
        path = posixpath.normpath(posixpath.join("docs", here, target.split("#", 1)[0]))
        if path.startswith("docs/"):
            return match.group(0)  # a page of the site
        if repo_url:
            return f"[{text}]({repo_url}/blob/main/{path})"
        return text if text.startswith("`") else f"`{text}`"

    return LINK.sub(outside, markdown)
