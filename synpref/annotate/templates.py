"""Prompt templates: package files (`synpref/annotate/templates/TASK.txt`), replaceable with
`--template FILE`, and the text layout of conversations inside a prompt.

A template is plain text with `$placeholders` (Python's string.Template; `$$` is a literal dollar).
Its body comes first; lines `### NAME` start named sections (the judge's default guideline and
example layout, the attribute questions, the retry instruction). A replacement must have every
section of the task and only known placeholders, checked when it is loaded, so a typo fails before
the first model call. Each label records the template's digest, so results of different prompts
are never mistaken for one another.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from string import Template

from synpref.records import Message

SECTION = re.compile(r"^### (\w+)[ \t]*$", re.MULTILINE)
BODY = ""  # the section name of the text before the first `### NAME` line

# task -> section -> the placeholders it may use
PLACEHOLDERS: dict[str, dict[str, frozenset[str]]] = {
    "judge": {
        BODY: frozenset({"guideline", "examples", "attributes", "conversation", "candidate_1", "candidate_2"}),
        "guideline": frozenset(),
        "example": frozenset({"number", "attributes", "conversation", "candidate_1", "candidate_2", "verdict"}),
        "retry": frozenset(),
    },
    "verify": {BODY: frozenset({"conversation", "reply"})},
    "attributes": {
        BODY: frozenset({"conversation"}),
        "task_category": frozenset({"options"}),
        "objectivity": frozenset({"options"}),
        "controversiality": frozenset({"options"}),
        "desired_attributes": frozenset({"task_category", "objectivity", "controversiality"}),
        "guideline": frozenset({"task_category", "objectivity", "controversiality", "desired_attributes"}),
        "retry": frozenset(),
    },
}


@dataclass(frozen=True)
class PromptTemplate:
    """One task's prompt text, split into its body and named sections."""

    task: str
    path: str
    sections: Mapping[str, str]
    digest: str  # the first 16 hex digits of the file's SHA-256

    @classmethod
    def load(cls, task: str, path: str | None = None) -> PromptTemplate:
        """The package's template of TASK, or the file at PATH; a bad file raises ValueError."""
        if task not in PLACEHOLDERS:
            raise ValueError(f"no template task {task!r} (one of {', '.join(PLACEHOLDERS)})")
        if path is None:
            source = resources.files("synpref.annotate") / "templates" / f"{task}.txt"
            text, path = source.read_text(encoding="utf-8"), f"synpref/annotate/templates/{task}.txt"
        else:
            try:
                with open(path, encoding="utf-8") as handle:
                    text = handle.read()
            except OSError as error:
                raise ValueError(f"template {path}: {error.strerror}") from None
        parts = SECTION.split(text)
        sections = {BODY: parts[0].strip("\n")}
        for name, section in zip(parts[1::2], parts[2::2], strict=True):
            if name in sections:
                raise ValueError(f"template {path}: section ### {name} appears twice")
            sections[name] = section.strip("\n")
        expected = PLACEHOLDERS[task]
        missing = [name for name in expected if name not in sections]
        unknown = [name for name in sections if name not in expected]
        if missing or unknown:
            raise ValueError(
                f"template {path}: a {task} template has sections "
                + ", ".join(f"### {name}" for name in expected if name)
                + (f"; missing {', '.join(missing) or 'the body'}" if missing else "")
                + (f"; unknown {', '.join(unknown)}" if unknown else "")
            )
        for name, section in sections.items():
            for placeholder in _placeholders(section, path):
                if placeholder not in expected[name]:
                    where = f"section ### {name}" if name else "the body"
                    known = ", ".join(f"${p}" for p in sorted(expected[name])) or "none"
                    raise ValueError(f"template {path}: unknown placeholder ${placeholder} in {where} (known: {known})")
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        return cls(task, path, sections, digest)

    def render(self, section: str = BODY, **values: str) -> str:
        """SECTION with its placeholders filled (placeholders a replacement leaves out are fine)."""
        return Template(self.sections[section]).safe_substitute(values)


def _placeholders(text: str, path: str) -> list[str]:
    names = []
    for match in Template.pattern.finditer(text):
        if match.group("invalid") is not None:
            line = text.count("\n", 0, match.start()) + 1
            raise ValueError(f"template {path}: a lone $ at line {line} of its section (write $$ for a dollar)")
        name = match.group("named") or match.group("braced")
        if name:
            names.append(name)
    return names


def clip(text: str, limit: int) -> tuple[str, bool]:
    """TEXT cut to LIMIT characters with a visible marker, and whether it was cut."""
    if len(text) <= limit:
        return text, False
    return text[:limit] + " [...]", True


def conversation_text(messages: Sequence[Message], limit: int) -> tuple[str, bool]:
    """The conversation as `User: ...` / `Assistant: ...` paragraphs, the oldest text cut first when
    it is longer than LIMIT characters (the last request matters most); and whether it was cut."""
    text = "\n\n".join(f"{message['role'].capitalize()}: {message['content']}" for message in messages)
    if len(text) <= limit:
        return text, False
    return "[...] " + text[len(text) - limit :], True
