"""``GET /api/labs/{labId}/files/{path}``: a lab's images for the panel, and nothing else.

Against the real server: an image of a lab.toml lab and of a Killercoda scenario is
served with its type; the lab's definition, scripts and hidden files are not; no
path leads out of the lab's folder (``..``, absolute, symlinks); every refusal is
the contract's JSON error; no credentials, no image.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient

#: The first bytes of a PNG are enough for a file the server only passes along.
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 300  # over one 64 KiB read
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
NO_AUTH = {"Authorization": ""}  # jp_fetch adds its token only when no header is given


@pytest.fixture
def labs_dir(tmp_path: Path) -> Path:
    labs = tmp_path / "labs"
    pics = labs / "pics"
    (pics / "assets").mkdir(parents=True)
    (pics / "lab.toml").write_text('title = "Pictures"\n[[steps]]\ntitle = "Look"\n'
                                   'text = "![a diagram](./assets/diagram.png)"\ncheck = "exit 0"\n')
    (pics / "assets" / "diagram.png").write_bytes(PNG)
    (pics / "assets" / "drawing.SVG").write_bytes(SVG)
    (pics / "assets" / ".hidden.png").write_bytes(PNG)
    (pics / "check.sh").write_text("exit 0\n")
    (tmp_path / "outside.png").write_bytes(PNG)
    (pics / "assets" / "escape.png").symlink_to(tmp_path / "outside.png")
    (pics / "assets" / "inside.png").symlink_to(pics / "assets" / "diagram.png")
    scenario = labs / "scenario"
    (scenario / "assets").mkdir(parents=True)
    (scenario / "index.json").write_text(json.dumps({
        "title": "Scenario", "details": {"steps": [{"title": "One", "text": "step1.md"}]}}))
    (scenario / "step1.md").write_text("![](./assets/shot.png)\n")
    (scenario / "assets" / "shot.png").write_bytes(PNG[:100])
    return labs


@pytest.fixture
def labkernel_config(labs_dir: Path) -> dict[str, Any]:
    return {"lab_path": [str(labs_dir)]}


async def fetch(jp_fetch: Any, *path: str, headers: dict[str, str] | None = None) -> Any:
    return await jp_fetch(*path, headers=headers or {}, raise_error=False, request_timeout=30)


def error_of(response: Any) -> dict[str, Any]:
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    body = json.loads(response.body)
    assert isinstance(body.get("message"), str) and body["message"].strip(), body
    return body


async def test_a_lab_image_is_served_with_its_type_and_runs_nothing(jp_fetch: Any) -> None:
    answer = await fetch(jp_fetch, "api", "labs", "pics", "files", "assets", "diagram.png")
    assert answer.code == 200
    assert answer.headers["Content-Type"] == "image/png"
    assert answer.body == PNG
    assert answer.headers["X-Content-Type-Options"] == "nosniff"

    svg = await fetch(jp_fetch, "api", "labs", "pics", "files", "assets", "drawing.SVG")
    assert svg.code == 200 and svg.body == SVG
    assert svg.headers["Content-Type"] == "image/svg+xml"
    # Opened on its own, the SVG's script must not run with the server's origin.
    policy = svg.headers["Content-Security-Policy"]
    assert "sandbox" in policy and "default-src 'none'" in policy

    # A symlink that stays inside the folder is the file it points to.
    inside = await fetch(jp_fetch, "api", "labs", "pics", "files", "assets", "inside.png")
    assert inside.code == 200 and inside.body == PNG


async def test_a_killercoda_scenario_s_images_are_served_too(jp_fetch: Any) -> None:
    answer = await fetch(jp_fetch, "api", "labs", "scenario", "files", "assets", "shot.png")
    assert answer.code == 200 and answer.body == PNG[:100]


@pytest.mark.parametrize("path", [
    # As sent on the wire: an HTTP client would resolve a plain "../" itself.
    "../pics/lab.toml", "assets/../../scenario/index.json", "assets/%2E%2E/lab.toml",
    "%2E%2E%2Fpics%2Flab.toml", "%2Fetc%2Fpasswd", "assets/diagram.png%00.png", "~/x.png",
])
async def test_a_path_out_of_the_lab_s_folder_is_refused(server_url: str, jp_serverapp: Any, path: str) -> None:
    answer = await AsyncHTTPClient().fetch(
        f"{server_url}api/labs/pics/files/{path}", raise_error=False, request_timeout=30,
        headers={"Authorization": f"token {jp_serverapp.identity_provider.token}"})
    assert answer.code == 400, answer.body
    assert error_of(answer)["error"] == "bad_request"


@pytest.mark.parametrize("path", [
    "lab.toml",                 # the definition: checks, solutions
    "check.sh",                 # a script
    "assets/.hidden.png",       # hidden
    "assets/escape.png",        # a symlink out of the folder
    "assets/nope.png",          # missing
    "assets",                   # a folder
])
async def test_what_is_not_an_image_of_the_lab_is_not_found(jp_fetch: Any, path: str) -> None:
    answer = await fetch(jp_fetch, "api", "labs", "pics", "files", *path.split("/"))
    assert answer.code == 404, answer.body
    body = error_of(answer)
    assert body["error"] == "not_found"
    assert "outside" not in body["message"] and "/" + "tmp" not in body["message"]


async def test_an_unknown_lab_or_the_built_in_shell_has_no_files(jp_fetch: Any) -> None:
    answer = await fetch(jp_fetch, "api", "labs", "nosuchlab", "files", "a.png")
    assert answer.code == 404 and error_of(answer)["error"] == "lab_not_found"
    answer = await fetch(jp_fetch, "api", "labs", "shell", "files", "a.png")
    assert answer.code == 404 and error_of(answer)["error"] == "not_found"


async def test_without_credentials_no_image_is_served(jp_fetch: Any) -> None:
    answer = await fetch(jp_fetch, "api", "labs", "pics", "files", "assets", "diagram.png", headers=NO_AUTH)
    assert answer.code == 403
    assert error_of(answer)["error"] == "forbidden"
    assert PNG[:8] not in answer.body


async def test_other_methods_are_refused_as_json(jp_fetch: Any) -> None:
    answer = await jp_fetch("api", "labs", "pics", "files", "assets", "diagram.png", method="DELETE",
                            raise_error=False)
    assert answer.code == 405
    assert error_of(answer)["error"] == "method_not_allowed"
