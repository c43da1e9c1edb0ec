"""Security: no remote code unless asked, no pickles written or loaded, nothing run in a shell."""

import ast
from pathlib import Path

import pytest
import yaml

from lunar_exp import models
from lunar_exp.models import load_pretrained, tiny_llama
from tests.conftest import CONF, ROOT

PACKAGE = ROOT / "lunar_exp"
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib"}
# Calls that start a shell or unpickle arbitrary objects.
FORBIDDEN_CALLS = {
    "os.system",
    "os.popen",
    "subprocess.getoutput",
    "subprocess.getstatusoutput",
    "pickle.load",
    "pickle.loads",
    "dill.load",
    "dill.loads",
    "joblib.load",
    "eval",
    "exec",
}


def test_every_model_config_keeps_remote_code_off():
    for path in sorted((CONF / "model").glob("*.yaml")):
        node = yaml.safe_load(path.read_text())
        if node["_target_"] == "lunar_exp.models.load_pretrained":
            assert node["trust_remote_code"] is False, path.name


class FromPretrained:
    """Stands in for ``from_pretrained``: records its keyword arguments, returns a tiny part."""

    def __init__(self, part: str):
        self.part, self.calls = part, []

    def __call__(self, path, **kwargs):
        self.calls.append(kwargs)
        tiny = tiny_llama()
        return tiny.model if self.part == "model" else tiny.tokenizer


@pytest.fixture
def loaders(monkeypatch):
    model, tokenizer = FromPretrained("model"), FromPretrained("tokenizer")
    monkeypatch.setattr(models.AutoModelForCausalLM, "from_pretrained", model)
    monkeypatch.setattr(models.AutoTokenizer, "from_pretrained", tokenizer)
    return model, tokenizer


@pytest.mark.parametrize("trust", [None, True])
def test_local_and_hub_models_prefer_safetensors_and_trust_code_only_when_asked(
    loaders, tmp_path, trust
):
    model, tokenizer = loaders
    extra = {} if trust is None else {"trust_remote_code": trust}
    load_pretrained("m", "", path=str(tmp_path), device="cpu", **extra)
    expected = bool(trust)
    assert model.calls[-1]["trust_remote_code"] is expected
    assert tokenizer.calls[-1]["trust_remote_code"] is expected
    # None: model.safetensors whenever the checkpoint has one; a .bin only without it
    assert model.calls[-1]["use_safetensors"] is None
    assert model.calls[-1]["weights_only"] is True


def test_converted_gguf_copies_load_as_safetensors_only(loaders, monkeypatch, tmp_path):
    model, tokenizer = loaders
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(models.cache, "read_entry", lambda entry: {"source": str(gguf)})
    load_pretrained("m", "", path=str(gguf), cache_dir=str(tmp_path), device="cpu")
    assert model.calls[-1]["use_safetensors"] is True
    assert model.calls[-1]["trust_remote_code"] is False
    assert tokenizer.calls[-1]["trust_remote_code"] is False


def _looks_pickled(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(4)
    is_pickle = len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5
    return is_pickle or head == b"PK\x03\x04"  # torch.save writes a zip of pickles


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _is(node: ast.AST | None, value: bool) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def _call_problem(node: ast.Call) -> str | None:
    """Why this call is unsafe, or None."""
    name = _dotted(node.func)
    keywords = {k.arg: k.value for k in node.keywords}
    if name in FORBIDDEN_CALLS:
        return name
    if "shell" in keywords and not _is(keywords["shell"], False):
        return f"{name}(shell=...)"
    if name.endswith("torch.load") and not _is(keywords.get("weights_only"), True):
        return f"{name} without weights_only=True"
    if _is(keywords.get("trust_remote_code"), True):
        return f"{name}(trust_remote_code=True)"
    return None


def _problems(path: Path) -> list[tuple[int, str]]:
    """(line, problem) of every unsafe call in a Python file."""
    calls = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)]
    found = [(node.lineno, _call_problem(node)) for node in calls]
    return sorted((line, why) for line, why in found if why)


def test_no_shell_no_unpickling_no_hard_coded_remote_code_in_the_sources():
    sources = sorted(PACKAGE.rglob("*.py")) + sorted((ROOT / "scripts").glob("*.py"))
    assert len(sources) > 20
    found = [
        f"{path.relative_to(ROOT)}:{line} {why}"
        for path in sources
        for line, why in _problems(path)
    ]
    assert found == []


def test_the_scan_catches_what_it_looks_for(tmp_path):
    bad = tmp_path / "probe.py"
    bad.write_text(
        "import os, pickle, subprocess, torch\n"
        "os.system(cmd)\n"
        "subprocess.run(cmd, shell=True)\n"
        "pickle.load(f)\n"
        "torch.load(p)\n"
        "torch.load(p, weights_only=False)\n"
        "m.from_pretrained(p, trust_remote_code=True)\n"
        "eval(text)\n"
        "subprocess.run(['ls'], shell=False)\n"
        "torch.load(p, weights_only=True)\n"
        "model.eval()\n"
    )
    assert [line for line, _ in _problems(bad)] == [2, 3, 4, 5, 6, 7, 8]
