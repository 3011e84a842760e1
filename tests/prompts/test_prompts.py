"""Prompt files: versioned, hashed, filled strictly (a missing value is an error)."""

from __future__ import annotations

import pytest

from prompts import PromptError, load_prompt


def test_prompts_are_versioned_and_hashed():
    for name in ("designer.md", "critic.md", "code_fixer.md"):
        p = load_prompt(name)
        assert p.version >= 1 and len(p.sha256) == 16 and p.system and p.user


def test_a_missing_value_is_an_error_naming_it():
    p = load_prompt("designer.md")
    values = dict.fromkeys(p.placeholders(), "x")
    del values["budgets"]
    with pytest.raises(PromptError, match=r"prompt 'designer' has no value for \$budgets$"):
        p.render(**values)
    system, user = p.render(**{**values, "budgets": "B", "best_code": "x = {'a': 1}"})
    assert "x = {'a': 1}" in user and "B" in user and "$" not in user.replace("$$", "")


def test_a_prompt_beside_a_role_module_and_a_missing_one(tmp_path):
    path = tmp_path / "scout.md"
    path.write_text("<!-- prompt: scout, version 3 -->\n## system\nS $a\n## user\nU $b\n")
    p = load_prompt(path)
    assert (p.name, p.version, p.placeholders()) == ("scout", 3, {"a", "b"})
    assert p.render(a="1", b="2") == ("S 1", "U 2")
    with pytest.raises(PromptError, match="cannot read prompt file .*nope.md"):
        load_prompt(tmp_path / "nope.md")
    path.write_text("## user\nno header\n")
    with pytest.raises(PromptError, match="missing '<!-- prompt"):
        load_prompt(path)


def test_designer_prompt_shows_the_move_effects():
    p = load_prompt("designer.md")
    assert p.version >= 3 and "move_effects" in p.placeholders()
    values = dict.fromkeys(p.placeholders(), "x")
    _, user = p.render(**{**values, "move_effects": "widen | 2 | 0 | 1/1/0 | +0.040"})
    assert "widen | 2 | 0 | 1/1/0 | +0.040" in user and "`parent`" in p.system
