"""Killercoda/Katacoda scenarios read as Labs: pure tests on folders written here.

The scenarios are our own, written in the format the public
killercoda/scenario-examples and katacoda/scenario-examples repositories use.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labkernel.labs.catalog import default_ids
from labkernel.labs.killercoda import (
    find_actions,
    load_scenario,
    map_code,
    port_links,
    repository,
    scenario_needs,
    solution_commands,
)
from labkernel.labs.model import DefinitionError


def write(folder: Path, files: dict[str, Any]) -> Path:
    """Write ``files`` (name → text, or a dict/list written as JSON) under ``folder``."""
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content if isinstance(content, str) else json.dumps(content))
    return folder


def scenario(tmp_path: Path, index: dict[str, Any], **files: str) -> Path:
    return write(tmp_path / "scn", {"index.json": index, **files})


def load_error(folder: Path) -> DefinitionError:
    with pytest.raises(DefinitionError) as error:
        load_scenario(folder, "scn")
    return error.value


MULTI_STEP = {
    "title": "Files",
    "description": "Make some files",
    "details": {
        "intro": {"text": "intro/text.md", "background": "intro/background.sh",
                  "foreground": "intro/foreground.sh"},
        "steps": [
            {"title": "Make a folder", "text": "step1/text.md", "verify": "step1/verify.sh",
             "background": "step1/background.sh", "foreground": "step1/foreground.sh"},
            {"title": "Write a file", "text": "step2/text.md", "verify": "step2/verify.sh",
             "hint": "step2/hint.md"},
        ],
        "finish": {"text": "finish/text.md"},
    },
    "backend": {"imageid": "ubuntu"},
}
MULTI_FILES = {
    "intro/text.md": "# Welcome\n",
    "intro/background.sh": "mkdir -p /tmp/x\ntouch /tmp/x/ready\n",
    "intro/foreground.sh": "until [ -f /tmp/x/ready ]; do sleep 1; done\n",
    "step1/text.md": "Make it:\n\n`mkdir -p work`{{exec}}\n\nOr copy `mkdir work`{{copy}}\n",
    "step1/verify.sh": "test -d work\n",
    "step1/background.sh": "echo entering step 1\n",
    "step1/foreground.sh": "clear\n",
    "step2/text.md": "```\ncd work\necho hi > hi.txt\n```{{exec}}\n",
    "step2/verify.sh": "grep -q hi work/hi.txt\n",
    "step2/hint.md": "Use `echo`.\n",
    "finish/text.md": "Done!\n",
}


def test_a_multi_step_scenario_maps_every_part_to_the_lab(tmp_path: Path) -> None:
    lab = load_scenario(scenario(tmp_path, MULTI_STEP, **MULTI_FILES), "files")
    assert (lab.id, lab.title, lab.description, lab.kind) == ("files", "Files", "Make some files", "killercoda")
    assert lab.scratch, "each session gets a fresh folder, as each Killercoda learner a fresh machine"
    assert lab.source == str(tmp_path / "scn")
    assert lab.intro == "# Welcome\n" and lab.finish == "Done!\n"
    assert lab.background == MULTI_FILES["intro/background.sh"] and lab.setup is None
    assert lab.foreground == MULTI_FILES["intro/foreground.sh"]
    one, two = lab.steps
    assert (one.title, one.text, one.check) == ("Make a folder", MULTI_FILES["step1/text.md"], "test -d work\n")
    assert (one.background, one.foreground, one.setup) == ("echo entering step 1\n", "clear\n", None)
    assert one.solution == ("mkdir -p work",)
    assert two.solution == ("cd work\necho hi > hi.txt",)
    assert two.hint == "Use `echo`.\n" and two.background is None and two.foreground is None
    assert any("backend image 'ubuntu'" in note for note in lab.notes)


def test_katacoda_aliases_and_answer_pages_are_read(tmp_path: Path) -> None:
    index = {
        "title": "Git", "description": "d",
        "details": {
            "intro": {"text": "intro.md", "courseData": "base.sh", "code": "cd.sh", "credits": "someone"},
            "steps": [{"title": "Init", "text": "step1.md", "verify": "step1-verify.sh",
                       "answer": "step1-answer.md", "courseData": "bg.sh", "code": "fg.sh"},
                      {"title": "Two", "text": "step2.md"}],
        },
        "environment": {"uilayout": "terminal"}, "time": "5 minutes", "difficulty": "easy",
    }
    folder = scenario(tmp_path, index, **{
        "intro.md": "hi", "base.sh": "setup", "cd.sh": "cd /tmp", "bg.sh": "bg", "fg.sh": "fg",
        "step1.md": "Run `ls`{{execute}} to look around, then init.",
        "step1-verify.sh": "[ -d .git ] && echo done",
        "step1-answer.md": "```\ngit init\n```{{execute}}",
        "step2.md": "nothing to run",
    })
    lab = load_scenario(folder, "git")
    assert (lab.background, lab.foreground) == ("setup", "cd /tmp")
    step = lab.steps[0]
    assert (step.background, step.foreground) == ("bg", "fg")
    # The answer is the author's solution; the exploratory `ls` of the text is not.
    assert step.solution == ("git init",)
    assert step.hint.startswith("<details><summary>Solution</summary>") and "git init" in step.hint
    assert lab.steps[1].solution == () and lab.steps[1].check is None
    assert any("environment" in note for note in lab.notes)
    assert any("credits" in note for note in lab.notes)
    assert not any("difficulty" in note or "time" in note.split() for note in lab.notes)


def test_both_a_key_and_its_katacoda_alias_keep_the_killercoda_one_with_a_note(tmp_path: Path) -> None:
    index = {"title": "t", "details": {"steps": [
        {"title": "s", "background": "a.sh", "courseData": "b.sh"}]}}
    lab = load_scenario(scenario(tmp_path, index, **{"a.sh": "A", "b.sh": "B"}), "t")
    assert lab.steps[0].background == "A"
    assert any("courseData is ignored" in note for note in lab.notes)


def test_missing_title_and_step_titles_fall_back_to_the_id_and_step_number(tmp_path: Path) -> None:
    lab = load_scenario(scenario(tmp_path, {"details": {"steps": [{}, {}]}}), "my-lab")
    assert lab.title == "my-lab"
    assert [s.title for s in lab.steps] == ["Step 1", "Step 2"]
    assert lab.intro == lab.finish == "" and lab.background is None


def test_bom_and_crlf_are_tolerated(tmp_path: Path) -> None:
    index = json.dumps({"title": "Bom", "details": {"steps": [{"title": "s", "text": "s.md",
                                                               "verify": "v.sh"}]}})
    folder = write(tmp_path / "scn", {
        "index.json": b"\xef\xbb\xbf" + index.encode(),
        "s.md": b"\xef\xbb\xbfLine one\r\n```\r\necho a\r\necho b\r\n```{{exec}}\r\n",
        "v.sh": b"test -f a\r\n",
    })
    lab = load_scenario(folder, "bom")
    assert lab.title == "Bom"
    assert lab.steps[0].text == "Line one\n```\necho a\necho b\n```{{exec}}\n"
    assert lab.steps[0].solution == ("echo a\necho b",)
    assert lab.steps[0].check == "test -f a\n"


def test_commands_for_other_terminals_are_noted(tmp_path: Path) -> None:
    index = {"details": {"steps": [{"text": "s.md"}]}}
    lab = load_scenario(scenario(tmp_path, index, **{"s.md": "`top`{{execute T2}} `ls`{{execute HOST1}}"}), "t")
    assert lab.steps[0].solution == ("top", "ls")
    assert lab.notes == ("details.steps[0] runs commands in T2; here they run in the lab's one terminal.",)


def test_an_inline_hint_is_kept_as_text(tmp_path: Path) -> None:
    index = {"title": "t", "details": {"steps": [{"title": "s", "hint": "Try `ls -a`, dotfiles hide."}]}}
    assert load_scenario(scenario(tmp_path, index), "t").steps[0].hint == "Try `ls -a`, dotfiles hide."


def test_unknown_keys_and_finish_scripts_are_noted_one_sentence_each(tmp_path: Path) -> None:
    index = {"title": "t", "interface": {"layout": "ide"}, "shiny": 1,
             "details": {"steps": [{"title": "s", "sparkle": True}],
                         "finish": {"text": "f.md", "foreground": "f.sh"}}}
    lab = load_scenario(scenario(tmp_path, index, **{"f.md": "bye", "f.sh": "echo bye"}), "t")
    joined = "\n".join(lab.notes)
    for word in ("interface", "shiny", "details.steps[0].sparkle", "details.finish.foreground"):
        assert word in joined
    assert all(note.count(". ") == 0 and note.endswith(".") for note in lab.notes)


# -- assets ---------------------------------------------------------------------------

def test_assets_resolve_globs_keep_subfolders_and_put_home_in_the_session_folder(tmp_path: Path) -> None:
    index = {"title": "t", "details": {"steps": [{"title": "s"}], "assets": {
        "host01": [{"file": "tool.sh", "target": "/usr/local/bin", "chmod": "+x"},
                   {"file": "conf/**/*.yaml", "target": "/root/conf/"},
                   {"file": "./*.txt", "target": "~"}],
        "host02": [{"file": "tool.sh", "target": "/tmp"}],
    }}}
    folder = scenario(tmp_path, index, **{
        "assets/tool.sh": "echo tool", "assets/a.txt": "a", "assets/b.txt": "b",
        "assets/conf/top.yaml": "x: 1", "assets/conf/deep/er.yaml": "y: 2", "assets/conf/skip.json": "{}",
    })
    lab = load_scenario(folder, "t")
    got = {(Path(a.source).relative_to((folder / "assets").resolve()).as_posix(), a.target, a.mode)
           for a in lab.assets}
    assert got == {
        ("tool.sh", "/usr/local/bin/", "+x"),
        ("conf/deep/er.yaml", "./conf/deep/", ""),
        ("conf/top.yaml", "./conf/", ""),
        ("a.txt", "./", ""), ("b.txt", "./", ""),
    }
    assert all(Path(a.source).is_absolute() for a in lab.assets)
    assert any("host02" in note for note in lab.notes)


@pytest.mark.parametrize("item, field, words", [
    ({"file": "../../index.json", "target": "~"}, "details.assets.host01[0].file", "out of"),
    ({"file": "../*.json", "target": "~"}, "details.assets.host01[0].file", "out of"),
    ({"target": "~"}, "details.assets.host01[0].file", "missing"),
    ({"file": "ok.sh"}, "details.assets.host01[0].target", "missing"),
    ({"file": "ok.sh", "target": "relative/dir"}, "details.assets.host01[0].target", "absolute"),
    ({"file": "ok.sh", "target": "~", "chmod": "rwx"}, "details.assets.host01[0].chmod", "chmod"),
    ({"file": 3, "target": "~"}, "details.assets.host01[0].file", "string"),
])
def test_bad_assets_name_the_item_at_fault(tmp_path: Path, item: dict[str, Any], field: str,
                                          words: str) -> None:
    index = {"title": "t", "details": {"steps": [{"title": "s"}], "assets": {"host01": [item]}}}
    error = load_error(scenario(tmp_path, index, **{"assets/ok.sh": "ok"}))
    assert error.field == field and words in error.reason


def test_an_asset_symlinked_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("no")
    folder = scenario(tmp_path, {"title": "t", "details": {"steps": [{"title": "s"}], "assets": {
        "host01": [{"file": "*", "target": "~"}]}}}, **{"assets/ok": "ok"})
    os.symlink(tmp_path / "secret", folder / "assets" / "leak")
    error = load_error(folder)
    assert error.field == "details.assets.host01[0].file" and "symlink out of" in error.reason


# -- bad input ---------------------------------------------------------------------------

def test_malformed_json_names_the_line_and_column(tmp_path: Path) -> None:
    folder = write(tmp_path / "scn", {"index.json": '{"title": "t",\n  "details": {,}}'})
    error = load_error(folder)
    assert error.field == "index.json" and "not valid JSON" in error.reason and "line 2" in error.reason


def test_a_folder_without_index_json_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert load_error(tmp_path / "empty").field == "index.json"


def test_index_json_that_is_not_utf8_is_an_error(tmp_path: Path) -> None:
    folder = write(tmp_path / "scn", {"index.json": b'{"title": "\xff"}'})
    assert "UTF-8" in load_error(folder).reason


@pytest.mark.parametrize("index, field, words", [
    ([], "index.json", "object"),
    ({"title": "t"}, "details", "missing"),
    ({"title": "t", "details": []}, "details", "object"),
    ({"title": "t", "details": {}}, "details.steps", "missing"),
    ({"title": "t", "details": {"steps": []}}, "details.steps", "empty"),
    ({"title": "t", "details": {"steps": {"title": "s"}}}, "details.steps", "array"),
    ({"title": "t", "details": {"steps": ["step1.md"]}}, "details.steps[0]", "object"),
    ({"title": 5, "details": {"steps": [{}]}}, "title", "string"),
    ({"title": "t", "description": ["x"], "details": {"steps": [{}]}}, "description", "string"),
    ({"title": "t", "details": {"steps": [{"title": None}]}}, "details.steps[0].title", "string"),
    ({"title": "t", "details": {"steps": [{}, {"verify": 7}]}}, "details.steps[1].verify", "must name a file"),
    ({"title": "t", "details": {"steps": [{"hint": ["x"]}]}}, "details.steps[0].hint", "string"),
    ({"title": "t", "details": {"intro": "intro.md", "steps": [{}]}}, "details.intro", "object"),
    ({"title": "t", "details": {"finish": {"text": 1}, "steps": [{}]}}, "details.finish.text", "must name"),
    ({"title": "t", "details": {"assets": [], "steps": [{}]}}, "details.assets", "object"),
    ({"title": "t", "details": {"assets": {"host01": {}}, "steps": [{}]}}, "details.assets.host01", "array"),
])
def test_wrong_shapes_name_the_field_and_what_was_expected(tmp_path: Path, index: Any, field: str,
                                                          words: str) -> None:
    error = load_error(scenario(tmp_path, index))
    assert (error.field, words in error.reason) == (field, True), error


@pytest.mark.parametrize("key", ["text", "verify", "background", "foreground", "courseData", "code",
                                 "answer", "hint"])
def test_a_missing_file_is_named_with_its_field(tmp_path: Path, key: str) -> None:
    error = load_error(scenario(tmp_path, {"title": "t", "details": {"steps": [
        {"title": "ok"}, {"title": "s", key: "step2/missing.md"}]}}))
    assert error.field == f"details.steps[1].{key}"
    assert "step2/missing.md" in error.reason and "does not exist" in error.reason


def test_missing_intro_and_finish_files_are_named(tmp_path: Path) -> None:
    error = load_error(scenario(tmp_path, {"details": {"intro": {"background": "nope.sh"}, "steps": [{}]}}))
    assert (error.field, "nope.sh" in error.reason) == ("details.intro.background", True)
    error = load_error(scenario(tmp_path, {"details": {"finish": {"text": "gone.md"}, "steps": [{}]}}))
    assert (error.field, "gone.md" in error.reason) == ("details.finish.text", True)


@pytest.mark.parametrize("ref", ["../outside.md", "sub/../../outside.md", "/etc/passwd", "~/x.md"])
def test_a_reference_out_of_the_folder_is_refused(tmp_path: Path, ref: str) -> None:
    (tmp_path / "outside.md").write_text("secret")
    error = load_error(scenario(tmp_path, {"details": {"steps": [{"text": ref}]}}))
    assert error.field == "details.steps[0].text"
    assert "out of the scenario's folder" in error.reason or "relative" in error.reason


def test_a_symlink_out_of_the_folder_is_refused_but_one_inside_is_fine(tmp_path: Path) -> None:
    (tmp_path / "outside.md").write_text("secret")
    folder = scenario(tmp_path, {"details": {"steps": [{"text": "in.md"}, {"text": "out.md"}]}},
                      **{"real.md": "inside"})
    os.symlink(folder / "real.md", folder / "in.md")
    os.symlink(tmp_path / "outside.md", folder / "out.md")
    error = load_error(folder)
    assert (error.field, "symlink out of" in error.reason) == ("details.steps[1].text", True)
    os.remove(folder / "out.md")
    os.symlink("real.md", folder / "out.md")
    assert [s.text for s in load_scenario(folder, "scn").steps] == ["inside", "inside"]


@pytest.mark.parametrize("ref", ["a\x00b.md", "x" * 300, "loop"])
def test_unusable_file_names_are_definition_errors(tmp_path: Path, ref: str) -> None:
    folder = scenario(tmp_path, {"details": {"steps": [{"text": ref}]}})
    os.symlink("loop", folder / "loop")
    error = load_error(folder)
    assert error.field == "details.steps[0].text" and "not a usable file name" in error.reason


def test_a_folder_named_as_a_file_is_an_error(tmp_path: Path) -> None:
    folder = scenario(tmp_path, {"details": {"steps": [{"verify": "step1"}]}})
    (folder / "step1").mkdir()
    assert "not a file" in load_error(folder).reason


# -- markers ----------------------------------------------------------------------------

def test_markers_in_both_spellings_with_flags() -> None:
    md = ("`a`{{exec}} `b`{{execute}} `c`{{exec interrupt}} `d`{{execute T2}} `e`{{execute HOST1}}\n"
          "`f`{{copy}} `g`{{}} `h`{{open}} `i`{{execute ctrl-seq}} `j`{{execute no-newline}} `k`{{weird}}\n"
          "`plain` and `` a`b ``{{exec}}\n")
    assert [(a.kind, a.code) for a in find_actions(md)] == [
        ("exec", "a"), ("exec", "b"), ("exec", "c"), ("exec", "d"), ("exec", "e"), ("copy", "f"),
        ("nocopy", "g"), ("open", "h"), ("exec", "i"), ("exec", "j"), ("other", "k"), ("exec", "a`b")]
    assert solution_commands(md) == ["a", "b", "\x03c", "d", "e", "a`b"]


def test_fenced_blocks_are_one_entry_and_only_marked_ones_count() -> None:
    md = ("```bash\nnot marked\n```\n\n"
          "~~~\ncat <<EOF > f\nline `x`{{exec}}\nEOF\n~~~{{exec}}\n\n"
          "  ````\n  ```\n  inner\n  ````{{copy}}\n"
          "```\nnever closed `y`{{exec}}\n")
    actions = find_actions(md)
    assert [(a.kind, a.code, a.block) for a in actions] == [
        ("exec", "cat <<EOF > f\nline `x`{{exec}}\nEOF", True),
        ("copy", "```\ninner", True),  # the fence's own indentation is not the code's
    ]


def test_pre_blocks_show_markdown_and_hold_no_markers() -> None:
    md = ("<pre>`no`{{execute}}</pre>\n<pre>\n```\nnope\n```{{execute}}\n</pre>\n"
          "`yes`{{execute}}\n")
    assert solution_commands(md) == ["yes"]


def test_an_escaped_backtick_does_not_open_a_span() -> None:
    assert solution_commands("\\`no`{{exec}}") == []
    assert solution_commands("\\`no\\` `yes`{{exec}}") == ["yes"]


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_marker_extraction_never_crashes_and_solutions_come_from_the_text(md: str) -> None:
    normalised = md.replace("\r\n", "\n").replace("\r", "\n")
    for command in solution_commands(md):
        body = command.removeprefix("\x03")
        # A span's newlines read as spaces; everything else is taken from the text as written.
        assert all(line.strip() in normalised.replace("\n", " ") or line.strip() in normalised
                   for line in body.split("\n"))


_plain = st.text(st.characters(blacklist_characters="`{}\\<~\r\n", blacklist_categories=("Cs",)), max_size=30)
_command = _plain.map(str.strip).filter(bool)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_plain, _command, st.booleans()), max_size=8), _plain)
def test_every_marked_command_is_found_in_order(parts: list[tuple[str, str, bool]], tail: str) -> None:
    md, expected = "", []
    for prose, command, fenced in parts:
        if fenced:
            md += f"{prose}\n```\n{command}\n```{{{{exec}}}}\n"
        else:
            md += f"{prose} `{command}`{{{{exec}}}} "
        expected.append(command)
    md += tail
    assert solution_commands(md) == expected


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12)
_ref = st.sampled_from(["s.md", "v.sh", "missing.md", "../up.md", "", "assets", "*.txt", "a\x00b.md",
                        "x" * 300, "loop", "s.md/"]) | _json
_step = st.dictionaries(st.sampled_from(["title", "text", "verify", "background", "foreground", "courseData",
                                         "code", "hint", "answer", "other"]), _ref, max_size=5)
_index = st.fixed_dictionaries({}, optional={
    "title": st.text(max_size=5) | _json,
    "description": st.text(max_size=5) | _json,
    "backend": _json,
    "details": st.fixed_dictionaries({}, optional={
        "intro": st.dictionaries(st.sampled_from(["text", "background", "code", "credits"]), _ref) | _json,
        "steps": st.lists(_step | _json, max_size=3) | _json,
        "finish": st.dictionaries(st.sampled_from(["text", "foreground"]), _ref) | _json,
        "assets": st.dictionaries(st.sampled_from(["host01", "client"]), st.lists(
            st.dictionaries(st.sampled_from(["file", "target", "chmod"]),
                            st.sampled_from(["a.txt", "*.txt", "~/", "/tmp", "+x", "zz", "**a/*.txt",
                                             "a\x00*", "[", "x" * 300]) | _json))
            | _json) | _json,
    }) | _json,
}) | _json


@settings(max_examples=150, deadline=None)
@given(index=_index)
def test_any_index_json_loads_or_raises_a_definition_error(tmp_path_factory: pytest.TempPathFactory,
                                                         index: Any) -> None:
    folder = write(tmp_path_factory.mktemp("any"), {
        "index.json": index, "s.md": "`ls`{{exec}}", "v.sh": "true", "assets/a.txt": "a"})
    if not (folder / "loop").is_symlink():
        os.symlink("loop", folder / "loop")
    try:
        lab = load_scenario(folder, "any")
    except DefinitionError as e:
        assert e.field and e.reason
    else:
        assert lab.steps and all(isinstance(s.title, str) for s in lab.steps)
        assert all(Path(a.source).resolve().is_relative_to(folder.resolve()) for a in lab.assets)


# -- what the platform gives: repositories, assets, placeholders, needs -----------------------

def test_a_symlink_may_lead_anywhere_in_the_scenarios_repository_but_not_out_of_it(tmp_path: Path) -> None:
    scanned = tmp_path / "labs"
    repo = scanned / "someone-scenarios"
    (repo / ".git").mkdir(parents=True)
    write(repo, {"materials/shared.md": "shared text", "materials/setup.sh": "echo shared"})
    (scanned / "other-repo" / ".git").mkdir(parents=True)
    write(scanned / "other-repo", {"private.md": "not yours"})
    folder = write(repo / "course" / "lesson", {
        "index.json": {"title": "t", "details": {"intro": {"background": "bg.sh"},
                                                 "steps": [{"title": "s", "text": "text.md"}]}}})
    os.symlink("../../materials/shared.md", folder / "text.md")
    os.symlink(repo / "materials" / "setup.sh", folder / "bg.sh")
    lab = load_scenario(folder, "lesson", scanned)
    assert (lab.steps[0].text, lab.background) == ("shared text", "echo shared")
    # Without the search path entry it came from, the folder alone is the limit (as before).
    assert "symlink out of the scenario's folder" in load_error(folder).reason
    os.remove(folder / "text.md")
    os.symlink("../../../other-repo/private.md", folder / "text.md")
    with pytest.raises(DefinitionError) as error:
        load_scenario(folder, "lesson", scanned)
    assert "symlink out of the scenario's repository" in error.value.reason
    # No repository: the search path entry is the limit.
    assert repository(tmp_path / "labs" / "x", scanned) == scanned.resolve()
    assert repository(folder, scanned) == repo.resolve()
    assert repository(tmp_path / "elsewhere", scanned) == (tmp_path / "elsewhere").resolve()


def test_a_written_path_out_of_the_folder_stays_refused_inside_a_repository(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    write(tmp_path, {"shared.md": "x"})
    folder = scenario(tmp_path, {"details": {"steps": [{"text": "../shared.md"}]}})
    with pytest.raises(DefinitionError) as error:
        load_scenario(folder, "scn", tmp_path)
    assert "leads out of the scenario's folder" in error.value.reason


def test_a_missing_asset_nothing_names_is_a_note_and_one_something_names_is_an_error(tmp_path: Path) -> None:
    def lab_with(step_text: str, items: list[dict[str, str]]) -> Path:
        index = {"title": "t", "details": {"steps": [{"title": "s", "text": "s.md"}],
                                          "assets": {"host01": items}}}
        return write(tmp_path / f"scn{len(list(tmp_path.iterdir()))}",
                     {"index.json": index, "s.md": step_text, "assets/ok.sh": "ok"})

    items = [{"file": "k8s.sh", "target": "/usr/local/bin"}, {"file": "ok.sh", "target": "~"},
             {"file": "*.nope", "target": "~"}]
    lab = load_scenario(lab_with("Run `ok.sh`{{exec}}", items), "t")
    assert [Path(a.source).name for a in lab.assets] == ["ok.sh"]
    assert any("'k8s.sh' is missing from assets/ and nothing in the scenario names it" in n for n in lab.notes)
    assert any("'*.nope' matches no file" in n for n in lab.notes)
    with pytest.raises(DefinitionError) as error:
        load_scenario(lab_with("Run `k8s.sh`{{exec}}", items), "t")
    assert error.value.field == "details.assets.host01[0].file" and "does not exist" in error.value.reason


def test_a_trailing_double_star_matches_every_file_below(tmp_path: Path) -> None:
    index = {"title": "t", "details": {"steps": [{"title": "s"}],
                                      "assets": {"host01": [{"file": "app/**", "target": "/opt/app"}]}}}
    folder = scenario(tmp_path, index, **{"assets/app/main.py": "1", "assets/app/lib/util.py": "2"})
    got = sorted((Path(a.source).name, a.target) for a in load_scenario(folder, "t").assets)
    assert got == [("main.py", "/opt/app/"), ("util.py", "/opt/app/lib/")]


def test_a_fence_in_a_list_item_loses_its_indentation_and_map_code_touches_only_code() -> None:
    md = ("1. Write it:\n\n   ```bash\n   cat <<EOF > f\n     deeper\n   EOF\n   ```{{exec}}\n\n"
          "2. `echo {{X}}`{{copy}} and {{X}} in prose\n<pre>\n{{X}}\n</pre>\n")
    assert solution_commands(md) == ["cat <<EOF > f\n  deeper\nEOF"]
    mapped = map_code(md, lambda code: code.replace("{{X}}", "Y"))
    assert mapped == md.replace("`echo {{X}}`", "`echo Y`").replace("<pre>\n{{X}}", "<pre>\nY")
    assert map_code(md, lambda code: code) == md


def test_ctrl_seq_c_is_a_keystroke_entry_and_other_keystrokes_are_no_solution() -> None:
    md = "`top`{{exec}} then `^C`{{execute ctrl-seq}}, `ctrl+d`{{execute ctrl-seq}}, `export K=`{{execute no-newline}}"
    assert solution_commands(md) == ["top", "\x03"]
    assert [a.keystroke for a in find_actions(md)] == [None, "\x03", "\x04", None]


@pytest.mark.parametrize("text, wrap, expected", [
    ("[app]({{TRAFFIC_HOST1_8080}})", True, "[app](/b/proxy/8080/)"),
    ("see {{TRAFFIC_HOST1_8080}}/books.", True, "see [/b/proxy/8080/books](/b/proxy/8080/books)."),
    ('<a href="{{TRAFFIC_HOST2_80}}">x</a>', True, '<a href="/b/proxy/80/">x</a>'),
    ("https://blog.[[HOST_SUBDOMAIN]]-9090-[[KATACODA_HOST]].environments.katacoda.com/config", False,
     "/b/proxy/9090/config"),
    ("[[HOST_SUBDOMAIN]]-80-[[KATACODA_HOST]].[[KATACODA_DOMAIN]]", False, "/b/proxy/80/"),
    ("{{TRAFFIC_HOST1_80}} first", True, "[/b/proxy/80/](/b/proxy/80/) first"),
    ("a (https://[[HOST_SUBDOMAIN]]-81-[[KATACODA_HOST]].environments.katacoda.com) b", True, "a (/b/proxy/81/) b"),
    ("ping [[HOST_IP]] and [[HOST2_IP]]", True, "ping 127.0.0.1 and 127.0.0.1"),
    ("{{TRAFFIC_HOST1_99999}} {{TRAFFIC_SELECTOR}}", True, "{{TRAFFIC_HOST1_99999}} {{TRAFFIC_SELECTOR}}"),
])
def test_port_placeholders_become_addresses(text: str, wrap: bool, expected: str) -> None:
    assert port_links(text, lambda port: f"/b/proxy/{port}/", wrap=wrap) == expected


def test_placeholders_in_scripts_and_code_are_localhost_and_the_rest_noted(tmp_path: Path) -> None:
    index = {"title": "t", "details": {"intro": {"background": "bg.sh", "text": "intro.md"},
                                      "steps": [{"title": "s", "text": "s.md", "verify": "v.sh"}]}}
    folder = scenario(tmp_path, index, **{
        "bg.sh": "curl {{TRAFFIC_HOST1_80}}/ready", "v.sh": "nc -z [[HOST_IP]] 80",
        "intro.md": "[{{TRAFFIC_HOST2_80}}]({{TRAFFIC_HOST2_80}}) [ports]({{TRAFFIC_SELECTOR}}) {{WHAT_IS_THIS}}",
        "s.md": "`curl {{TRAFFIC_HOST1_80}}`{{exec}} in prose {{TRAFFIC_HOST1_80}}"})
    lab = load_scenario(folder, "t")
    assert lab.background == "curl http://localhost:80/ready" and lab.steps[0].check == "nc -z 127.0.0.1 80"
    assert lab.steps[0].text == "`curl http://localhost:80`{{exec}} in prose {{TRAFFIC_HOST1_80}}"
    assert lab.steps[0].solution == ("curl http://localhost:80",) and lab.links
    notes = " ".join(lab.notes)
    assert "HOST2" in notes and "{{TRAFFIC_SELECTOR}}" in notes and "{{WHAT_IS_THIS}}" in notes
    # Without placeholders, nothing for the catalog to rewrite.
    plain = scenario(tmp_path / "plain", {"title": "t", "details": {"steps": [{"title": "s"}]}})
    assert not load_scenario(plain, "t").links


@pytest.mark.parametrize("image, code, targets, needs", [
    ("kubernetes-kubeadm-2nodes", [], [], ("kubernetes",)),
    ("ubuntu", ["ls -l; cat /etc/os-release > out.txt; curl -s http://localhost:8080"], ["./"], ()),
    ("ubuntu", ["helm install x ./chart"], [], ("kubernetes",)),
    ("ubuntu", ["docker build -t app ."], [], ("docker",)),
    ("ubuntu", ["systemctl restart nginx"], [], ("systemd",)),
    ("ubuntu", ["curl -fsSL https://example.org/install.sh | sh"], [], ("internet",)),
    ("ubuntu", ["apt-get -y install jq"], [], ("internet", "root")),
    ("ubuntu", ["apt-get install -y ./kc-hello.deb"], [], ("root",)),  # a local package: no mirror
    ("ubuntu", ["echo 127.0.0.1 app >> /etc/hosts"], [], ("root",)),
    ("ubuntu", ["sed -i 's/a/b/' /etc/nginx/nginx.conf"], [], ("root",)),
    ("ubuntu", ["useradd alice"], [], ("root",)),
    ("ubuntu", [], ["/usr/local/bin/"], ("root",)),
    ("ubuntu", [], ["/tmp/"], ()),
    ("docker-swarm", [], [], ("docker",)),
])
def test_needs_from_the_image_commands_and_asset_targets(image: str, code: list[str], targets: list[str],
                                                         needs: tuple[str, ...]) -> None:
    assert scenario_needs(image, code, targets) == needs


def test_default_ids_keep_unique_names_and_give_namesakes_their_paths(tmp_path: Path) -> None:
    a, b = tmp_path / "labs", tmp_path / "more"
    found = [(a / "repo1" / "code-actions", a), (a / "repo2" / "old" / "code-actions", a),
             (a / "unique", a), (b / "shell", b), (b / "unique-too", b), (a / "unique", a)]
    assert default_ids(found) == {
        str(a / "repo1" / "code-actions"): "repo1.code-actions",
        str(a / "repo2" / "old" / "code-actions"): "repo2.old.code-actions",
        str(a / "unique"): "unique", str(b / "shell"): "shell", str(b / "unique-too"): "unique-too",
    }
