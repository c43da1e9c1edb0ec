"""Bad input, as a matrix: every case is a real `python -m lunar_exp` run that must stop at once
with a non-zero exit, a message naming the problem (and, for the project's own errors, the fix on
one line), and no metrics.json."""

import json

import pytest

from tests.conftest import SHARED, needs_shared, run_cli

QA_OK = [
    {"question": "Q1?", "answer": "A", "edge": "A_B"},
    {"question": "Q2?", "answer": "C", "edge": "C_D"},
]
QA_FILES = {
    "ok.json": QA_OK,
    "schema.json": [{"q": "x"}],
    "overlap.json": [*QA_OK, {"question": "Q1?", "answer": "B", "edge": "C_D"}],
    "long.json": [{"question": "Q1?", "answer": "A " * 3000, "edge": "A_B"}, QA_OK[1]],
    "empty.json": [],
}


def qa_json(name: str, edges: str = "[A_B]") -> list[str]:
    return [
        "benchmark=qa_json",
        f"benchmark.path={{data}}/{name}",
        f"benchmark.forget_edges={edges}",
    ]


# (case id, overrides after +exp=smoke, exit code, message fragments)
CASES = [
    (
        "hub id offline",
        ["model=hf", "model.path=org/name"],
        2,
        ["hub is unreachable", "model.path=/local/model/dir"],
    ),
    (
        "model dir missing",
        ["model=hf", "model.path=/nonexistent/model"],
        2,
        ["/nonexistent/model", "Fix"],
    ),
    (
        "gguf package missing",
        ["model=smollm2_135m", "model.package=no_such_pkg"],
        2,
        ["'no_such_pkg'", "not installed", "Fix"],
    ),
    ("unknown group option", ["method=nosuch"], 1, ["Could not find 'method/nosuch'", "lunar"]),
    (
        "misspelled key",
        ["method.lyers=[3]"],
        1,
        ["Could not override 'method.lyers'", "not in struct"],
    ),
    ("dataset file missing", qa_json("nope.json"), 2, ["not found", "Fix: set benchmark.path"]),
    ("wrong schema", qa_json("schema.json"), 2, ["lacks string field(s)", "Fix"]),
    ("empty dataset", qa_json("empty.json"), 2, ["non-empty JSON list", "Fix"]),
    ("empty forget set", qa_json("ok.json", "[]"), 2, ["forget set is empty", "Fix"]),
    (
        "edge not in data",
        qa_json("ok.json", "[NO_SUCH_EDGE]"),
        2,
        ["['NO_SUCH_EDGE'] not found", "A_B, C_D"],
    ),
    ("layer out of range", ["method.layers=[99]"], 2, ["[99] is out of range", "Fix"]),
    ("negative layer", ["method.layers=[-1]"], 2, ["[-1] is out of range", "Fix"]),
    ("rmu layer out of range", ["method=rmu", "method.layer=40"], 2, ["[40] is out of range"]),
    ("repeated layer", ["method.layers=[1,1]"], 2, ["repeats a layer", "Fix"]),
    ("no general source", ["method.general_path=[]"], 2, ["[] names no source", "Fix"]),
    ("fine-tuning without epochs", ["finetune.epochs=0"], 2, ["finetune.epochs=0 is out of range"]),
    ("zero threads", ["threads=0"], 2, ["threads=0 is out of range", "Fix: use a value >= 1"]),
    (
        "LUNAR setting out of range",
        ["method.activation_batch_size=0"],
        2,
        ["method.activation_batch_size=0 is out of range", "Fix"],
    ),
    (
        "auto layers without candidates",
        ["method.layers=auto", "model.num_layers=2"],
        2,
        ["method.layers=auto has no candidate layer in a 2-layer model", "Fix"],
    ),
    (
        "coefficient not a number",
        ["method.coeffs=[abc]"],
        2,
        ["method.coeffs[0]='abc' is not a number", "Fix"],
    ),
    (
        "learning rate not a number",
        ["method=ga", "method.loop.lr=fast"],
        2,
        ["method.loop.lr='fast' is not a number", "Fix"],
    ),
    ("seed not an integer", ["seed=abc"], 2, ["seed='abc' is not an integer", "Fix"]),
    (
        "retain overlaps forget",
        qa_json("overlap.json"),
        2,
        ["in both the forget and retain sets", "Fix"],
    ),
    ("beyond the context", qa_json("long.json"), 2, ["beyond the model's context of 512", "Fix"]),
    (
        "unknown LUNAR solver",
        ["method.solver=newton"],
        2,
        ["method.solver='newton'", "closed_form"],
    ),
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad_input")
    for name, records in QA_FILES.items():
        (folder / name).write_text(json.dumps(records))
    return folder


@pytest.mark.parametrize(
    ("overrides", "code", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_stops_at_once_with_a_clear_message(
    overrides, code, fragments, data_dir, tmp_path
):
    args = ["+exp=smoke", *(o.format(data=data_dir) for o in overrides)]
    result = run_cli(args, tmp_path, timeout=120, env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == code, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in result.stderr
    if code == 2:  # the project's own errors: exactly one line, no traceback
        errors = [line for line in result.stderr.splitlines() if "lunar_exp: error:" in line]
        assert len(errors) == 1 and "Traceback" not in result.stderr
    assert not list(tmp_path.rglob("metrics.json"))


@needs_shared()
def test_unknown_tofu_split_names_the_choices(tmp_path):
    args = [
        "+exp=smoke",
        "benchmark=tofu",
        f"benchmark.path={SHARED / 'tofu'}",
        "benchmark.split=forget99",
    ]
    result = run_cli(args, tmp_path, timeout=120)
    assert result.returncode == 2
    assert "benchmark.split='forget99' is not a TOFU forget split" in result.stderr
    assert "['forget01', 'forget05', 'forget10']" in result.stderr
