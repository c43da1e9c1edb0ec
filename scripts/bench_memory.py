"""Peak RSS of LUNAR and of evaluation scoring against the number of retain questions.

Usage: python scripts/bench_memory.py [--sizes 240 960 3960] [--out docs/bench_memory]

Each size runs in a fresh child process, so ``ru_maxrss`` is that size's own peak. The child loads
the embedded SmolLM2-135M (the cached float32 copy; no fine-tuning, since this measures streaming,
not quality) and TOFU from ../shared/benchdata/tofu as a run with ``benchmark=tofu
benchmark.split=forget01 benchmark.retain_authors=N/20`` would: forget01 (40 questions) is the
forget set and the first N retain99 questions the retain set (3960 + 40 = TOFU's 4,000). It runs
LUNAR with this model's settings (layer 24, c = 4, closed form, retain answers and abstentions
pinned), then scores the answer-token NLL of every retain question (teacher-forced, as evaluation
does), inside the run's ``batch_tokens`` budget, with one torch thread.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import fmean

from _runs import ROOT, machine

TOFU = ROOT.parent / "shared" / "benchdata" / "tofu"
STAGES = ("load", "lunar", "score")


def main() -> None:
    """Run every size in its own child process; write JSON and a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[240, 960, 3960])
    parser.add_argument("--out", default=str(ROOT / "docs" / "bench_memory"))
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        Path(args.result).write_text(json.dumps(measure(args.child)))
        return
    if any(n % 20 or n < 20 for n in args.sizes) or sorted(args.sizes) != args.sizes:
        raise SystemExit("--sizes: increasing multiples of 20 (one TOFU author = 20 questions)")
    rows = [run_child(n) for n in args.sizes]
    command = " ".join(["python scripts/bench_memory.py", *sys.argv[1:]])
    report = {"command": command, "machine": machine(), "sizes": rows, "growth": growth(rows)}
    Path(args.out + ".json").write_text(json.dumps(report, indent=2) + "\n")
    Path(args.out + ".md").write_text(markdown(report))
    print(json.dumps(report["growth"], indent=2))


def run_child(n_retain: int) -> dict:
    """Measure one size in a fresh interpreter and return its row."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, "--child", str(n_retain), "--result", str(result)]
        done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            raise SystemExit(f"size {n_retain} failed:\n{done.stdout.decode()[-3000:]}")
        row = json.loads(result.read_text())
    print(json.dumps(row), flush=True)
    return row


def measure(n_retain: int) -> dict:
    """LUNAR + scoring on ``n_retain`` retain questions; peak RSS and time after each stage."""
    import torch
    from hydra.utils import instantiate

    from lunar_exp.methods import build_method
    from lunar_exp.metrics.primitives import answer_nll, batch_token_budget, padding_id
    from lunar_exp.prompts import encode_item_pairs

    torch.set_num_threads(1)
    cfg = _config(n_retain)
    start, stages = time.perf_counter(), {}
    data = instantiate(cfg.benchmark).load().unlearn
    chat = instantiate(cfg.model)
    stages["load"] = _stage(start)
    pairs = encode_item_pairs(chat.tokenizer, data.retain, chat.system_prompt)
    with batch_token_budget(cfg.batch_tokens):
        start = time.perf_counter()
        outcome = build_method(cfg.method).unlearn(chat, data)
        stages["lunar"] = _stage(start)
        start = time.perf_counter()
        nll = answer_nll(
            chat.model, pairs, padding_id(chat.tokenizer), cfg.benchmark.eval_batch_size
        )
        stages["score"] = _stage(start)
    return {
        "n_retain": n_retain,
        "n_questions": len(data.forget) + len(data.retain),
        "retain_tokens": sum(len(p) + len(a) for p, a in pairs),
        "lunar_rows": sum(v for k, v in outcome.metrics.items() if k.startswith("lunar/rows_")),
        "retain_nll_mean": fmean(nll),
        "batch_tokens": cfg.batch_tokens,
        "stages": stages,
    }


def _config(n_retain: int):
    from hydra import compose, initialize_config_dir

    overrides = [
        "benchmark=tofu",
        f"benchmark.path={TOFU}",
        "benchmark.split=forget01",
        f"benchmark.retain_authors={n_retain // 20}",
        "threads=1",
    ]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides)


def _stage(start: float) -> dict:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": round(time.perf_counter() - start, 1), "peak_rss_mb": round(peak, 1)}


def _exponent(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y on log x: 1 = linear growth, 0 = flat."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = fmean(lx), fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum(
        (a - mx) ** 2 for a in lx
    )


def growth(rows: list[dict]) -> dict:
    """Peak RSS growth against retain-set growth, and the verdict.

    ``sublinear`` holds when both the whole peak and the part above the loaded model grow with
    an exponent below 1 (log-log slope over all sizes) and by a smaller factor than the size.
    """
    sizes = [r["n_retain"] for r in rows]
    peak = [r["stages"]["score"]["peak_rss_mb"] for r in rows]
    above = [p - r["stages"]["load"]["peak_rss_mb"] for p, r in zip(peak, rows, strict=True)]
    out = {
        "size_ratio": sizes[-1] / sizes[0],
        "peak_rss_ratio": peak[-1] / peak[0],
        "above_load_ratio": above[-1] / above[0],
        "peak_rss_exponent": round(_exponent(sizes, peak), 3),
        "above_load_exponent": round(_exponent(sizes, above), 3),
    }
    out["sublinear"] = (
        out["peak_rss_exponent"] < 1
        and out["above_load_exponent"] < 1
        and out["peak_rss_ratio"] < out["size_ratio"]
        and out["above_load_ratio"] < out["size_ratio"]
    )
    return out


def markdown(report: dict) -> str:
    """The report as a Markdown table with the verdict."""
    lines = [
        f"Generated by `{report['command']}` (one child process per size, 1 torch thread).",
        "",
        "SmolLM2-135M (float32) with TOFU: forget01 (40 questions) as forget set, the first N "
        "retain99 questions as retain set; LUNAR at layer 24, c = 4 (closed form, retain answers "
        "and abstentions pinned), then the answer-token NLL of every retain question. Peak RSS is "
        "the child's `ru_maxrss` after each stage; `batch_tokens` "
        f"= {report['sizes'][0]['batch_tokens']}.",
        "",
        "| retain questions | all questions | retain tokens | LUNAR rows | LUNAR s | scoring s | "
        "peak RSS after load MB | after LUNAR MB | after scoring MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["sizes"]:
        s = r["stages"]
        lines.append(
            f"| {r['n_retain']} | {r['n_questions']} | {r['retain_tokens']} | "
            f"{r['lunar_rows']:.0f} | {s['lunar']['seconds']} | {s['score']['seconds']} | "
            f"{s['load']['peak_rss_mb']:.0f} | {s['lunar']['peak_rss_mb']:.0f} | "
            f"{s['score']['peak_rss_mb']:.0f} |"
        )
    g = report["growth"]
    lines += [
        "",
        f"Size grows {g['size_ratio']:.1f}x; peak RSS {g['peak_rss_ratio']:.2f}x (log-log "
        f"exponent {g['peak_rss_exponent']}), the part above the loaded model "
        f"{g['above_load_ratio']:.2f}x (exponent {g['above_load_exponent']}). "
        f"Sub-linear: **{str(g['sublinear']).lower()}**.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
