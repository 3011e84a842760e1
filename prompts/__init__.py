"""Prompt templates, one Markdown file per role, versioned and hashed into traces.

A file has a ``<!-- prompt: NAME, version N -->`` header and ``## system`` / ``## user``
sections; ``$name`` placeholders are filled with :class:`string.Template` (so braces in
code need no escaping). Filling is strict: a placeholder without a value raises
:class:`PromptError` naming it, before any model sees the prompt. A role's prompt may
live beside its own module (``agents.registry`` resolves the path); bare names are read
from this package.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template


class PromptError(ValueError):
    """A prompt file that cannot be read or filled (the message names the file and value)."""


_HEADER = re.compile(r"<!--\s*prompt:\s*([\w.-]+),\s*version\s*(\d+)\s*-->")


@dataclass(frozen=True)
class Prompt:
    """A loaded prompt file."""

    name: str
    version: int
    sha256: str
    system: str
    user: str

    def placeholders(self) -> set[str]:
        """Names of every ``$placeholder`` in the system and user parts."""
        names: set[str] = set()
        for part in (self.system, self.user):
            names |= set(Template(part).get_identifiers())
        return names

    def render(self, **values: object) -> tuple[str, str]:
        """Return (system, user) with every ``$placeholder`` filled.

        Raises:
            PromptError: A placeholder has no value (all missing names are listed).
        """
        missing = sorted(self.placeholders() - set(values))
        if missing:
            raise PromptError(f"prompt {self.name!r} has no value for "
                              + ", ".join(f"${m}" for m in missing))
        try:
            return Template(self.system).substitute(values), Template(self.user).substitute(values)
        except ValueError as exc:  # a stray '$' the file should write as '$$'
            raise PromptError(f"prompt {self.name!r}: {exc}") from exc


def load_prompt(filename: str | Path) -> Prompt:
    """Read a prompt file and split it into system and user parts.

    Args:
        filename: A path (a role's prompt beside its module) or a file name in this package.

    Raises:
        PromptError: The file is missing or has no ``<!-- prompt: NAME, version N -->`` header.
    """
    where = Path(filename) if Path(filename).is_absolute() else None
    try:
        text = where.read_text(encoding="utf-8") if where else \
            (resources.files("prompts") / str(filename)).read_text(encoding="utf-8")
    except OSError as exc:
        raise PromptError(f"cannot read prompt file {where or f'prompts/{filename}'}: "
                          f"{exc.strerror or exc}") from exc
    head = _HEADER.search(text)
    if head is None:
        raise PromptError(f"{where or f'prompts/{filename}'}: missing "
                          "'<!-- prompt: NAME, version N -->' header")
    parts = re.split(r"^## (system|user)\s*$", text, flags=re.MULTILINE)
    sections = dict(zip(parts[1::2], (p.strip("\n") for p in parts[2::2]), strict=True))
    return Prompt(
        name=head.group(1),
        version=int(head.group(2)),
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest()[:16],
        system=sections.get("system", ""),
        user=sections.get("user", ""),
    )
