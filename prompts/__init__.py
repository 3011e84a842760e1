"""Prompt templates, one Markdown file per role, versioned and hashed into traces.

A file has a ``<!-- prompt: NAME, version N -->`` header and ``## system`` / ``## user``
sections; ``$name`` placeholders are filled with :class:`string.Template` (so braces in
code need no escaping).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from string import Template

_HEADER = re.compile(r"<!--\s*prompt:\s*([\w.-]+),\s*version\s*(\d+)\s*-->")


@dataclass(frozen=True)
class Prompt:
    """A loaded prompt file."""

    name: str
    version: int
    sha256: str
    system: str
    user: str

    def render(self, **values: object) -> tuple[str, str]:
        """Return (system, user) with ``$placeholders`` filled (missing ones left as is)."""
        return (Template(self.system).safe_substitute(values),
                Template(self.user).safe_substitute(values))


def load_prompt(filename: str) -> Prompt:
    """Read ``prompts/<filename>`` and split it into system and user parts."""
    text = (resources.files("prompts") / filename).read_text(encoding="utf-8")
    head = _HEADER.search(text)
    if head is None:
        raise ValueError(f"prompts/{filename}: missing '<!-- prompt: NAME, version N -->' header")
    parts = re.split(r"^## (system|user)\s*$", text, flags=re.MULTILINE)
    sections = dict(zip(parts[1::2], (p.strip("\n") for p in parts[2::2]), strict=True))
    return Prompt(
        name=head.group(1),
        version=int(head.group(2)),
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest()[:16],
        system=sections.get("system", ""),
        user=sections.get("user", ""),
    )
