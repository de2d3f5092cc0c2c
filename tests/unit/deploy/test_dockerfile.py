"""The Dockerfile, linted with hadolint and read for the properties the image promises."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from tests.unit.deploy.conftest import REPO_ROOT, run_tool, tool

DOCKERFILE = REPO_ROOT / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def instructions(path: Path) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    found: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = pending + line
        pending = ""
        keyword, _, arguments = text.partition(" ")
        found.append(Instruction(keyword.upper(), arguments.strip()))
    return found


def stages(found: list[Instruction]) -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for instruction in found:
        if instruction.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def base_images(found: list[Instruction]) -> list[str]:
    """Each FROM's image, with `${ARG}` replaced by the ARG's default."""
    defaults = dict(
        i.arguments.split("=", 1) for i in found if i.keyword == "ARG" and "=" in i.arguments
    )
    images = []
    for instruction in found:
        if instruction.keyword == "FROM":
            image = instruction.arguments.split()[0]
            images.append(re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], image))
    return images


def test_hadolint_finds_nothing() -> None:
    result = run_tool(tool("hadolint"), "--failure-threshold", "info", str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_mistake(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    broken.write_text(DOCKERFILE.read_text() + "RUN cd /app && pip install requests\n")
    result = run_tool(tool("hadolint"), str(broken))
    assert result.returncode != 0 and "DL3042" in result.stdout


def test_the_build_has_several_stages_and_a_named_runtime() -> None:
    found = stages(instructions(DOCKERFILE))
    assert len(found) >= 3
    names = [stage[0].arguments.split()[-1] for stage in found]
    assert names == ["graphiql", "python-env", "runtime"]


def test_base_images_are_pinned_to_a_version_or_digest() -> None:
    images = base_images(instructions(DOCKERFILE))
    assert images
    for image in images:
        assert not image.endswith(":latest") and ("@sha256:" in image or ":" in image), image
        tag = image.split("@")[0].rpartition(":")[2]
        # A full version (3.11.14, 22.12.0), not a moving major tag.
        assert "@sha256:" in image or re.match(r"^\d+\.\d+\.\d+", tag), image


def test_the_runtime_runs_unprivileged_serves_and_checks_its_health() -> None:
    runtime = stages(instructions(DOCKERFILE))[-1]
    # The last of each keyword is the one in force.
    by_keyword = {i.keyword: i.arguments for i in runtime}
    # Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
    user = by_keyword["USER"].split(":")[0]
    assert user.isdigit() and int(user) >= 1000
    assert "/health/live" in by_keyword["HEALTHCHECK"]
    assert json.loads(by_keyword["ENTRYPOINT"]) == ["polygraph"]
    assert json.loads(by_keyword["CMD"]) == ["serve"]
    assert "POLYGRAPH_HOST=0.0.0.0" in by_keyword["ENV"]


def test_dependencies_come_from_the_lock_with_hashes_and_without_the_local_extra() -> None:
    runs = " ".join(i.arguments for i in instructions(DOCKERFILE) if i.keyword == "RUN")
    assert "--require-hashes" in runs and "-c requirements.lock" in runs
    assert "--all-extras" not in runs and "embedded" not in runs
    assert "npm ci" in runs


def test_the_build_context_leaves_local_state_out() -> None:
    ignored = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    # Allow-list: everything is excluded, then the sources the image needs are let in.
    assert ignored[[line.startswith("#") for line in ignored].index(False)] == "*"
    assert "!var/" not in ignored and "!.venv/" not in ignored
    copied = {
        i.arguments.split()[0]
        for i in instructions(DOCKERFILE)
        if i.keyword == "COPY" and not i.arguments.startswith("--from")
    }
    for source in copied:
        assert f"!{source.split('/')[0]}/" in ignored or f"!{source}" in ignored, source
