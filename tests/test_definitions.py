"""lab.toml definitions and the catalog's scan of the search path, without a server.

Each bad definition must give a ``DefinitionError`` naming the field and the
reason; the scanner turns it into a ``LabProblem`` and keeps serving the rest.
"""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest

from labkernel.labs import files
from labkernel.labs.catalog import LabScanner, find_lab_folders
from labkernel.labs.files import Limits
from labkernel.labs.labtoml import load_lab_toml
from labkernel.labs.model import DefinitionError

REPO_LABS = Path(__file__).resolve().parent.parent / "labs"


def write_lab(parent: Path, name: str, toml: str, files: dict[str, str] | None = None) -> Path:
    folder = parent / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "lab.toml").write_text(textwrap.dedent(toml))
    for rel, text in (files or {}).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    return folder


def error_of(folder: Path) -> DefinitionError:
    with pytest.raises(DefinitionError) as info:
        load_lab_toml(folder, folder.name)
    return info.value


FULL = """
    id = "demo"
    title = "Demo"
    description = "All the keys."
    command = ["bash", "--norc"]
    workdir = "work/demo"
    setup_file = "setup.sh"
    foreground = "echo hi"
    lifetime = 600
    idle_timeout = 60.5
    pool = 2
    intro_file = "intro.md"
    finish = "Bye."

    [env]
    PLAIN = "x"
    KEY = { value = "${HOME}", secret = true }

    [[steps]]
    title = "One"
    text_file = "steps/one.md"
    check_file = "checks/one.sh"
    hint = "try"
    solution = ["mkdir a", "touch a/b"]

    [[steps]]
    title = "Two"
    solution = "echo two"
    setup = "true"

    [[assets]]
    source = "files/data.csv"
    target = "~/data.csv"
    mode = "+x"
"""


def test_every_key_of_a_full_definition_is_read(tmp_path: Path) -> None:
    folder = write_lab(tmp_path, "demo-folder", FULL, {
        "setup.sh": "echo setting up\n", "intro.md": "# Hello\n", "steps/one.md": "Do one.\n",
        "checks/one.sh": "test -d a\n", "files/data.csv": "a,b\n"})
    lab = load_lab_toml(folder, "demo-folder")
    assert (lab.id, lab.title, lab.description) == ("demo", "Demo", "All the keys.")
    assert lab.argv == ("bash", "--norc") and lab.workdir == "work/demo" and not lab.scratch
    assert lab.setup == "echo setting up\n" and lab.foreground == "echo hi"
    assert (lab.lifetime, lab.idle_timeout, lab.pool) == (600.0, 60.5, 2)
    assert lab.intro == "# Hello\n" and lab.finish == "Bye."
    assert [(v.name, v.value, v.secret) for v in lab.env] == [("PLAIN", "x", False), ("KEY", "${HOME}", True)]
    one, two = lab.steps
    assert (one.title, one.text, one.check, one.hint, one.solution) == (
        "One", "Do one.\n", "test -d a\n", "try", ("mkdir a", "touch a/b"))
    assert two.solution == ("echo two",) and two.check is None and two.setup == "true"
    (asset,) = lab.assets
    assert asset.source == str((folder / "files/data.csv").resolve()) and asset.target == "~/data.csv"
    assert lab.kind == "lab.toml" and lab.source == str(folder)


def test_a_minimal_definition_takes_its_id_and_title_from_the_folder(tmp_path: Path) -> None:
    lab = load_lab_toml(write_lab(tmp_path, "tiny", ""), "tiny")
    assert (lab.id, lab.title, lab.steps, lab.argv, lab.pool) == ("tiny", "tiny", (), (), 0)


@pytest.mark.parametrize("toml, field, words", [
    ('title = "unclosed', "lab.toml", "not valid TOML"),
    ("title = 3", "title", "must be a string, not a whole number"),
    ("pool = true", "pool", "must be a whole number, not a boolean"),
    ("pool = -1", "pool", "0 or more"),
    ("lifetime = 0", "lifetime", "more than 0"),
    ('lifetime = "long"', "lifetime", "a number of seconds"),
    ('command = "bash"', "command", "a list of strings"),
    ("command = [1]", "command[1]", "must be a string"),
    ('id = "../etc"', "id", "is not a lab id"),
    ('id = "-x"', "id", "is not a lab id"),
    ("tittle = 'typo'", "tittle", "unknown key"),
    ("[[steps]]\ntext = 'no title'", "steps[1].title", "is required"),
    ("[[steps]]\ntitle = 'a'\nchek = 'true'", "steps[1].chek", "unknown key"),
    ("[[steps]]\ntitle = 'a'\nsolution = [1]", "steps[1].solution[1]", "must be a string"),
    ("steps = 3", "steps", "a list of tables"),
    ("[[steps]]\ntitle = 'a'\ncheck = 'x'\ncheck_file = 'c.sh'", "steps[1].check", "not both"),
    ("[env]\n'1BAD' = 'x'", "env.1BAD", "not a valid environment variable name"),
    ("[env]\nX = 3", "env.X", "must be a string or a table"),
    ("[env]\nX = { secret = true }", "env.X.value", "is required"),
    ("[env]\nX = { value = 'v', secret = 'yes' }", "env.X.secret", "true or false"),
    ("workdir = '/etc'", "workdir", "relative"),
    ("workdir = 'a/../../etc'", "workdir", "without '..'"),
    ("workdir = 'a'\nscratch = true", "scratch", "not both"),
    ("setup_file = 'missing.sh'", "setup_file", "does not exist"),
    ("setup_file = '../outside.sh'", "setup_file", "leaves the lab's folder"),
    ("setup_file = '/etc/passwd'", "setup_file", "relative to the lab's folder"),
    ("[[assets]]\nsource = '../outside.sh'", "assets[1].source", "leaves the lab's folder"),
    ("[[assets]]\nsource = 'nothing'", "assets[1].source", "does not exist"),
    ("[[assets]]\nsource = 'lab.toml'\nmode = 'rwx'", "assets[1].mode", "not a mode"),
])
def test_a_bad_definition_names_the_field_and_the_reason(tmp_path: Path, toml: str, field: str,
                                                         words: str) -> None:
    (tmp_path / "outside.sh").write_text("echo secret\n")
    error = error_of(write_lab(tmp_path, "bad", toml))
    assert error.field == field, error
    assert words in error.reason, error


def test_a_file_reference_through_a_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("the server's secret\n")
    folder = write_lab(tmp_path, "linked", "[[steps]]\ntitle = 'a'\ntext_file = 'steps/text.md'\n")
    (folder / "steps").mkdir()
    os.symlink(tmp_path / "secret.txt", folder / "steps" / "text.md")
    error = error_of(folder)
    assert error.field == "steps[1].text_file" and "symlink" in error.reason


def test_a_symlink_inside_the_folder_is_followed(tmp_path: Path) -> None:
    folder = write_lab(tmp_path, "linked", "setup_file = 'link.sh'\n", {"real.sh": "echo ok\n"})
    os.symlink("real.sh", folder / "link.sh")
    assert load_lab_toml(folder, "linked").setup == "echo ok\n"


def test_a_file_that_is_not_utf8_text_is_refused(tmp_path: Path) -> None:
    folder = write_lab(tmp_path, "binary", "setup_file = 'setup.sh'\n")
    (folder / "setup.sh").write_bytes(b"\xff\xfe\x00binary")
    assert "not UTF-8" in error_of(folder).reason


# -- the scanner ------------------------------------------------------------------------------


def scan(root: Path, *paths: str):
    return LabScanner(str(root), list(paths) or ["labs"]).scan()


def test_lab_folders_are_found_in_a_tree_skipping_hidden_folders_and_node_modules(tmp_path: Path) -> None:
    labs = tmp_path / "labs"
    write_lab(labs, "a", "")
    write_lab(labs / "course" / "week1", "b", "")
    write_lab(labs / ".hidden", "c", "")
    write_lab(labs / "node_modules", "d", "")
    # a lab folder is not searched further: its subfolders are its own files
    write_lab(labs / "a", "inner", "")
    found = [p.relative_to(labs).as_posix() for p in find_lab_folders(labs)]
    assert found == ["a", "course/week1/b"]
    result = scan(tmp_path)
    assert [lab.id for lab in result.labs] == ["shell", "a", "b"] and result.problems == []


def test_an_entry_may_be_a_lab_folder_itself_or_absolute(tmp_path: Path) -> None:
    folder = write_lab(tmp_path / "elsewhere", "solo", "")
    result = scan(tmp_path / "root-does-not-matter", str(folder))
    assert [lab.id for lab in result.labs] == ["shell", "solo"]


def test_a_missing_search_path_entry_leaves_the_built_in_shell(tmp_path: Path) -> None:
    result = scan(tmp_path, "labs", "nowhere/at/all")
    assert [lab.id for lab in result.labs] == ["shell"] and result.problems == []


def test_a_bad_definition_is_a_problem_and_the_others_are_served(tmp_path: Path) -> None:
    write_lab(tmp_path / "labs", "good", "title = 'Good'")
    write_lab(tmp_path / "labs", "broken", "title = [")
    result = scan(tmp_path)
    assert [lab.id for lab in result.labs] == ["shell", "good"]
    (problem,) = result.problems
    assert problem.path == "labs/broken/lab.toml" and problem.lab_id == "broken"
    assert problem.field == "lab.toml" and "not valid TOML" in problem.reason
    assert problem.model() == {"path": "labs/broken/lab.toml", "field": "lab.toml",
                               "reason": problem.reason, "labId": "broken"}


def test_a_duplicate_id_is_a_problem_naming_both_folders_and_the_first_keeps_it(tmp_path: Path) -> None:
    write_lab(tmp_path / "labs", "a", "id = 'same'\ntitle = 'First'")
    write_lab(tmp_path / "labs", "b", "id = 'same'\ntitle = 'Second'")
    write_lab(tmp_path / "labs", "shell", "title = 'Not the built-in'")
    result = scan(tmp_path)
    assert [(lab.id, lab.title) for lab in result.labs] == [("shell", "Shell"), ("same", "First")]
    dup, builtin = result.problems
    assert dup.field == "id" and dup.path == "labs/b/lab.toml" and "labs/a" in dup.reason
    assert builtin.path == "labs/shell/lab.toml" and "built-in" in builtin.reason


def test_a_changed_definition_is_read_again_and_an_unchanged_one_is_not(tmp_path: Path) -> None:
    folder = write_lab(tmp_path / "labs", "a", "title = 'One'")
    write_lab(tmp_path / "labs", "b", "title = 'Bee'")
    scanner = LabScanner(str(tmp_path), ["labs"])
    first = {lab.id: lab for lab in scanner.scan().labs}
    (folder / "lab.toml").write_text("title = 'Two, and longer'")
    second = {lab.id: lab for lab in scanner.scan().labs}
    assert second["a"].title == "Two, and longer"
    assert second["b"] is first["b"]  # not re-read
    (folder / "lab.toml").write_text("title = 'Three, longer still'")
    os.utime(folder / "lab.toml", ns=(1, 1))  # an mtime going back counts as a change too
    assert {lab.id: lab for lab in scanner.scan().labs}["a"].title == "Three, longer still"


def test_problems_are_reported_as_new_once(tmp_path: Path) -> None:
    write_lab(tmp_path / "labs", "broken", "title = [")
    scanner = LabScanner(str(tmp_path), ["labs"])
    assert len(scanner.scan().new_problems) == 1
    again = scanner.scan()
    assert len(again.problems) == 1 and again.new_problems == []


def test_the_sample_labs_of_the_repository_load(tmp_path: Path) -> None:
    result = LabScanner(str(tmp_path), [str(REPO_LABS)]).scan()
    ids = {lab.id for lab in result.labs}
    assert {"files-and-folders", "git-basics"} <= ids
    assert [p for p in result.problems if p.lab_id in ("files-and-folders", "git-basics")] == []
    for lab in result.labs:
        if lab.id in ("files-and-folders", "git-basics"):
            assert lab.steps and all(step.check and step.solution for step in lab.steps)


def test_the_readme_example_is_a_valid_definition(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    example = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    folder = write_lab(tmp_path, "example", example, {"files/data.csv": "a,b\n"})
    lab = load_lab_toml(folder, "example")
    assert lab.id == "git-basics" and lab.pool == 2 and lab.steps[0].solution
    assert [v.secret for v in lab.env] == [False, True]


# -- what the scan reads: within caps, a byte-order mark tolerated ---------------------------


def caps_scan(root: Path, **caps: int):
    return LabScanner(str(root), ["labs"], caps=Limits(**caps)).scan()


def sparse(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)  # a hole: no disk, no page cache, until something reads it


def test_a_sparse_500_mb_definition_is_refused_by_its_size_unread(tmp_path: Path) -> None:
    write_lab(tmp_path / "labs", "good", "title = 'Good'")
    huge = tmp_path / "labs" / "huge"
    huge.mkdir()
    sparse(huge / "lab.toml", 500 * 1024 * 1024)
    started = time.monotonic()
    result = caps_scan(tmp_path)
    assert time.monotonic() - started < 5  # reading it took 14 s, and 1 GiB of the server's memory
    assert [lab.id for lab in result.labs] == ["shell", "good"]
    (problem,) = result.problems
    assert (problem.path, problem.field, problem.lab_id) == ("labs/huge/lab.toml", "lab.toml", "huge")
    assert "524288000 bytes" in problem.reason and "1048576" in problem.reason
    assert "max_definition_size" in problem.reason and "not read" in problem.reason


@pytest.mark.parametrize("kind", ["lab.toml", "index.json"])
def test_the_definition_cap_is_a_setting_and_holds_for_killercoda_too(tmp_path: Path, kind: str) -> None:
    folder = tmp_path / "labs" / "big"
    folder.mkdir(parents=True)
    if kind == "lab.toml":
        (folder / kind).write_text(f"title = 'Big'\ndescription = '{'x' * 5000}'\n")
    else:
        (folder / kind).write_text('{"title": "Big", "description": "' + "x" * 5000 + '", '
                                   '"details": {"steps": [{"title": "a", "text": "a.md"}]}}')
        (folder / "a.md").write_text("step\n")
    assert [lab.id for lab in caps_scan(tmp_path, definition=6000).labs] == ["shell", "big"]
    (problem,) = caps_scan(tmp_path, definition=4096).problems
    assert problem.field == kind and "the limit is 4096 bytes" in problem.reason


@pytest.mark.parametrize("kind", ["lab.toml", "index.json"])
def test_a_step_text_over_its_cap_is_refused_and_so_is_a_lab_over_its_total(tmp_path: Path, kind: str) -> None:
    folder = tmp_path / "labs" / "wordy"
    folder.mkdir(parents=True)
    steps = [f"s{i}.md" for i in range(4)]
    for name in steps:
        (folder / name).write_text("y" * 3000)
    if kind == "lab.toml":
        (folder / kind).write_text("".join(f"[[steps]]\ntitle = '{n}'\ntext_file = '{n}'\n" for n in steps))
    else:
        (folder / kind).write_text('{"details": {"steps": [%s]}}'
                                   % ", ".join(f'{{"title": "{n}", "text": "{n}"}}' for n in steps))
    assert [lab.id for lab in caps_scan(tmp_path).labs] == ["shell", "wordy"]
    (problem,) = caps_scan(tmp_path, text=2048).problems
    assert "'s0.md' is 3000 bytes; the limit is 2048 bytes" in problem.reason
    assert "max_lab_file_size" in problem.reason
    (problem,) = caps_scan(tmp_path, total=10000).problems
    assert "10000 bytes in all" in problem.reason and "max_lab_size" in problem.reason


def test_a_fifo_or_a_device_as_definition_or_text_is_refused_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "labs" / "fifo"
    fifo.mkdir(parents=True)
    os.mkfifo(fifo / "lab.toml")  # is_file() is false: the walk does not take it for a lab
    texty = write_lab(tmp_path / "labs", "texty", "[[steps]]\ntitle = 'a'\ntext_file = 'pipe.md'\n")
    os.mkfifo(texty / "pipe.md")
    zero = write_lab(tmp_path / "labs", "zero", "setup_file = 'dev'\n")
    os.symlink("/dev/zero", zero / "dev")  # out of the folder anyway, but not a file either
    result = caps_scan(tmp_path)
    assert [lab.id for lab in result.labs] == ["shell"]
    reasons = {p.lab_id: p.reason for p in result.problems}
    assert "does not exist in the lab's folder or is not a file" in reasons["texty"]
    assert "symlink" in reasons["zero"] or "not a file" in reasons["zero"]


def test_the_reader_refuses_a_fifo_and_a_file_that_grew_past_its_cap(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(DefinitionError, match="not a regular file"):
        files.read_bytes(tmp_path / "pipe", "x")
    # A procfs file says it is empty and is not: read up to the cap, then refused.
    with files.limits(definition=1024, text=16, total=1 << 20), \
            pytest.raises(DefinitionError, match="more bytes than that"):
        files.read_bytes("/proc/self/mountinfo", "x")


def test_a_definition_that_is_a_symlink_out_of_its_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere.toml").write_text("title = 'borrowed'")
    folder = tmp_path / "labs" / "linked"
    folder.mkdir(parents=True)
    os.symlink(tmp_path / "elsewhere.toml", folder / "lab.toml")
    (problem,) = caps_scan(tmp_path).problems
    assert problem.field == "lab.toml" and "symlink" in problem.reason


def test_a_byte_order_mark_is_taken_as_utf8_in_a_definition_and_its_files(tmp_path: Path) -> None:
    folder = write_lab(tmp_path / "labs", "bom", "")
    (folder / "lab.toml").write_bytes(
        "\ufefftitle = 'Boomed'\n[[steps]]\ntitle = 'a'\ntext_file = 'a.md'\n".encode())
    (folder / "a.md").write_bytes("\ufeff# Step\n".encode())
    (lab,) = [lab for lab in caps_scan(tmp_path).labs if lab.id == "bom"]
    assert lab.title == "Boomed" and lab.steps[0].text == "# Step\n"


def test_a_lab_naming_a_credential_in_its_env_says_so_in_its_notes(tmp_path: Path) -> None:
    write_lab(tmp_path / "labs", "greedy", "[env]\nT = '${LABKERNEL_TOKEN}'\nH = '${HOME}'\n")
    (lab,) = [lab for lab in caps_scan(tmp_path).labs if lab.id == "greedy"]
    (note,) = lab.notes
    assert "LABKERNEL_TOKEN" in note and "HOME" not in note and "never get" in note
