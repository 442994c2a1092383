"""The evaluation report: Markdown, JSON and a PNG of quality against cost, per variant.

`write_report(result, out_dir)` writes `report.md`, `report.json` and `quality_vs_cost.png`
into `out_dir` all at once (a sibling temp directory renamed into place), so a failure
leaves the previous report intact. The JSON's `variants` entries carry the manifest's
variant keys (docs/DESIGN.md, section 3) plus an `eval` object with this run's
measurements and per-case results.

The report answers three questions with measurements: which variants pass every floor,
which one does so at the lowest cost, and whether pruning costs the `edge`,
`adversarial` and `multilingual` slices more than `common` (the per-slice drop from dense,
with the paired count of cases lost and gained and a two-standard-error band).
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from edge_runtime.bundle import Quality, atomic_directory
from edge_runtime.errors import EvalError
from export.evaluate import BundleEval, VariantEval
from export.floors import DIMENSIONS
from export.suite import SLICES

REPORT_FILES = ("report.md", "report.json", "quality_vs_cost.png")
TAIL = ("edge", "adversarial", "multilingual")  # the slices aggregate perplexity tends to hide
COLUMNS = ("common", "edge", "adversarial", "multilingual", "format", "instruction", "ppl_retention", "latency", "size")


# --------------------------------------------------------------------------- analysis


def slice_drops(result: BundleEval) -> dict[str, dict[str, dict[str, float]]]:
    """Per variant and slice: dense - variant accuracy, cases lost and gained, and 2 SE of the drop.

    The two runs see the same cases, so the drop's standard error comes from the paired
    disagreements: SE = sqrt(lost + gained - (lost - gained)^2 / n) / n.
    """
    dense = {c.id: c for c in result.variant(result.reference).cases}
    out: dict[str, dict[str, dict[str, float]]] = {}
    for v in result.variants:
        if v.name == result.reference:
            continue
        per: dict[str, dict[str, float]] = {}
        for s in SLICES:
            pairs = [(dense[c.id].correct, c.correct) for c in v.cases if c.slice == s and c.id in dense]
            if not pairs:
                continue
            n = len(pairs)
            lost = sum(1 for d, x in pairs if d and not x)
            gained = sum(1 for d, x in pairs if x and not d)
            var = max(lost + gained - (lost - gained) ** 2 / n, 0.0)
            per[s] = {"drop": (lost - gained) / n, "lost": lost, "gained": gained, "n": n, "two_se": 2 * math.sqrt(var) / n}
        out[v.name] = per
    return out


def tail_verdict(drops: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Whether each tail slice dropped more than `common`, and whether by more than the noise."""
    if "common" not in drops:
        return {}
    c = drops["common"]
    out: dict[str, Any] = {}
    for s in TAIL:
        if s not in drops:
            continue
        d = drops[s]
        gap = d["drop"] - c["drop"]
        noise = math.sqrt((d["two_se"] / 2) ** 2 + (c["two_se"] / 2) ** 2) * 2
        out[s] = {"minus_common": round(gap, 4), "two_se": round(noise, 4), "more": gap > 0, "beyond_noise": gap > noise}
    return out


def cheapest_passing(result: BundleEval) -> str | None:
    """The variant that passed every floor with the lowest relative latency (then size); None without floors."""
    passing = [v for v in result.variants if v.gate.status == "pass"]
    if not passing:
        return None
    return min(passing, key=lambda v: (v.scores.get("latency", math.inf), v.scores.get("size", math.inf))).name


def per_language(result: BundleEval, v: VariantEval) -> dict[str, float]:
    langs = {c.id: c.lang for c in result.suite.cases}
    acc: dict[str, list[bool]] = {}
    for c in v.cases:
        if c.slice == "multilingual":
            acc.setdefault(langs.get(c.id, "?"), []).append(c.correct)
    return {k: round(sum(x) / len(x), 4) for k, x in sorted(acc.items())}


def chance(result: BundleEval) -> dict[str, float]:
    out = {}
    for s in SLICES:
        cs = result.suite.slice(s)
        if cs:
            out[s] = round(sum(c.chance for c in cs) / len(cs), 4)
    return out


# --------------------------------------------------------------------------- JSON


def report_dict(result: BundleEval, cases: bool = True) -> dict[str, Any]:
    """Everything the run measured, variants in the manifest's shape plus an `eval` object."""
    drops = slice_drops(result)
    variants = []
    for ev in result.variants:
        v = result.manifest.variant(ev.name)
        v = replace(v, quality=Quality(_fin(ev.perplexity), dict(ev.scores), v.quality.extra),
                    gate=ev.gate if result.floors else v.gate)
        entry = v.to_dict()
        entry["eval"] = {**ev.to_dict(cases), "per_language": per_language(result, ev)}
        variants.append(entry)
    fl = result.floors
    return {
        "bundle": result.bundle,
        "model": result.manifest.model.source,
        "suite": {"version": result.suite.version, "path": result.suite.path, "cases": len(result.suite.cases),
                  "stats": result.suite.stats()},
        "config": {k: getattr(result.config, k) for k in result.config.__dataclass_fields__},
        "reference": result.reference,
        "heldout_tokens": result.tokens,
        "latency_source": result.latency_source,
        "floors": None if fl is None else {
            "path": fl.path, "version": fl.version, "suite_version": fl.suite_version, "floors": fl.floors,
            "ceilings": fl.ceilings, "profiles": fl.profiles,
        },
        "chance": chance(result),
        "variants": variants,
        "drops": drops,
        "tail_vs_common": {name: tail_verdict(d) for name, d in drops.items()},
        "cheapest_passing": cheapest_passing(result),
    }


def _fin(x: float) -> float | None:
    return x if math.isfinite(x) else None


# --------------------------------------------------------------------------- Markdown


def _cell(ev: VariantEval, dim: str) -> str:
    if dim not in ev.scores:
        return "–"
    text = f"{ev.scores[dim]:.2f}"
    return f"**{text}** ✗" if dim in ev.gate.failed else text


def report_markdown(result: BundleEval) -> str:
    """A human-readable report: the gate table, drops per slice, the cheapest passing variant."""
    m, fl = result.manifest, result.floors
    cols = [c for c in COLUMNS if any(c in v.scores for v in result.variants)]
    lines = [
        f"# Evaluation: {m.model.source}",
        "",
        f"- bundle: `{result.bundle}`; reference (dense): `{result.reference}`",
        f"- suite {result.suite.version}: {len(result.suite.cases)} cases"
        + (f" (first {result.config.limit} per slice)" if result.config.limit else ""),
        f"- choice cases scored by `{result.config.choice_metric}` log-likelihood; held-out perplexity over "
        f"{result.tokens:,} tokens ({result.config.windows} windows of {result.config.window})",
        f"- latency: reference request of {result.config.latency_prompt} prompt + {result.config.latency_new} new tokens, "
        f"from {'the manifest cost' if result.latency_source == 'manifest' else 'timings on this machine'}",
        f"- floors: {'none (gate left pending)' if fl is None else f'`{fl.path}` version {fl.version}'}",
        "",
        "## Scores and gate",
        "",
        "Slices, `format` and `instruction` are accuracies (0-1); `ppl_retention` is dense perplexity / "
        "variant perplexity; `latency` and `size` are relative to dense (lower is cheaper). **Bold ✗** = below "
        "its floor or above its ceiling.",
        "",
        "| variant | method | sparsity | quant | " + " | ".join(cols) + " | perplexity | gate |",
        "|---|---|---|---|" + "---|" * len(cols) + "---|---|",
    ]
    for ev in result.variants:
        v = m.variant(ev.name)
        gate = ev.gate.status if not ev.gate.failed else f"fail ({', '.join(ev.gate.failed)})"
        lines.append(
            f"| {ev.name} | {v.method} | {v.sparsity:.2f} | {v.quantization} | "
            + " | ".join(_cell(ev, c) for c in cols)
            + f" | {ev.perplexity:.2f} | {gate} |"
        )
    if fl is not None:
        limits = [f"≥ {fl.floors[c]:.2f}" if c in fl.floors else f"≤ {fl.ceilings[c]:.2f}" if c in fl.ceilings else ""
                  for c in cols]
        lines.append("| *floor* | | | | " + " | ".join(limits) + " | | |")
    best = cheapest_passing(result)
    lines += ["", "## Cheapest variant that clears every floor", ""]
    if fl is None:
        lines.append("No floors were given, so no variant was gated.")
    elif best is None:
        lines.append("**None**: no variant, not even the dense one, cleared every floor.")
    else:
        ev = result.variant(best)
        lines.append(f"**{best}**: latency {ev.scores.get('latency', float('nan')):.2f}× and size "
                     f"{ev.scores.get('size', float('nan')):.2f}× of dense.")

    drops = slice_drops(result)
    if drops:
        lines += [
            "", "## Drop per slice from dense", "",
            "Dense accuracy minus the variant's (positive = the variant is worse), with cases lost/gained "
            "against dense on the same cases and ± two paired standard errors.",
            "",
            "| variant | " + " | ".join(s for s in SLICES) + " | tail slices lose more than common? |",
            "|---|" + "---|" * len(SLICES) + "---|",
        ]
        for name, per in drops.items():
            cells = [
                f"{per[s]['drop']:+.3f} ±{per[s]['two_se']:.3f} (−{per[s]['lost']}/+{per[s]['gained']})" if s in per else "–"
                for s in SLICES
            ]
            verdict = tail_verdict(per)
            words = ", ".join(
                f"{s}: {'yes' if x['more'] else 'no'}{' (beyond noise)' if x['beyond_noise'] else ''}"
                for s, x in verdict.items()
            )
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {words} |")

    ch = chance(result)
    dense = result.variant(result.reference)
    lines += ["", "## Dense model against chance", "", "| slice | dense | chance | cases |", "|---|---|---|---|"]
    for s in SLICES:
        if s in dense.scores:
            lines.append(f"| {s} | {dense.scores[s]:.3f} | {ch.get(s, 0):.3f} | {len(result.suite.slice(s))} |")

    lines += ["", "## Choice cases under both log-likelihood metrics", "",
              "| variant | " + " | ".join(f"{s} sum / norm" for s in SLICES) + " |", "|---|" + "---|" * len(SLICES)]
    for ev in result.variants:
        lines.append(f"| {ev.name} | " + " | ".join(
            f"{ev.choice[s]['sum']:.2f} / {ev.choice[s]['norm']:.2f}" if s in ev.choice else "–" for s in SLICES) + " |")

    langs = sorted({k for ev in result.variants for k in per_language(result, ev)})
    if langs:
        lines += ["", "## Multilingual slice by language", "", "| variant | " + " | ".join(langs) + " |",
                  "|---|" + "---|" * len(langs)]
        for ev in result.variants:
            pl = per_language(result, ev)
            lines.append(f"| {ev.name} | " + " | ".join(f"{pl[k]:.2f}" if k in pl else "–" for k in langs) + " |")

    if fl is not None and fl.profiles:
        lines += ["", "## Per-profile floors (delivered quality, for edge-sim)", ""]
        for prof, tbl in fl.profiles.items():
            lines.append(f"- `{prof}`: " + ", ".join(f"{k} ≥ {v:.2f}" for k, v in tbl.items()))
    lines += ["", "![quality vs cost](quality_vs_cost.png)", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- plot


def plot(result: BundleEval, path: str | Path) -> None:
    """Quality against relative latency and size, one point per variant; failed variants as crosses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for ax, cost in zip(axes, ("latency", "size"), strict=True):
        for ev in result.variants:
            slices = [ev.scores[s] for s in SLICES if s in ev.scores]
            q = sum(slices) / len(slices) if slices else 0.0
            x = ev.scores.get(cost, 1.0)
            failed = ev.gate.status == "fail"
            ax.scatter([x], [q], marker="x" if failed else "o", s=60, color="tab:red" if failed else "tab:green", zorder=3)
            ax.annotate(ev.name, (x, q), textcoords="offset points", xytext=(5, 4), fontsize=8)
            for s, mk in zip(SLICES, "^sDv", strict=True):
                if s in ev.scores:
                    ax.scatter([x], [ev.scores[s]], marker=mk, s=18, alpha=0.5, color=f"C{SLICES.index(s)}",
                               label=s if ev is result.variants[0] else None)
        ax.set_xlabel(f"{cost} relative to dense (lower is cheaper)")
        ax.set_ylabel("accuracy (big marker: mean of slices)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{result.manifest.model.source}: quality vs cost per variant (o pass, x fail)")
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- files


def write_report(result: BundleEval, out_dir: str | Path) -> Path:
    """Write report.md, report.json and quality_vs_cost.png into `out_dir`, all or nothing.

    Refuses to replace a directory that holds anything but a previous report.
    """
    out = Path(out_dir)
    if out.exists():
        if not out.is_dir():
            raise EvalError(f"report path {str(out)!r} is a file; pass a directory to --report")
        other = sorted(p.name for p in out.iterdir() if p.name not in REPORT_FILES)
        if other:
            raise EvalError(f"report directory {str(out)!r} holds other files {other[:5]}; pass a new or empty directory")
    md = report_markdown(result)
    data = json.dumps(report_dict(result), indent=1, ensure_ascii=False, allow_nan=False)
    with atomic_directory(out, force=True) as tmp:
        (tmp / "report.md").write_text(md, encoding="utf-8")
        (tmp / "report.json").write_text(data + "\n", encoding="utf-8")
        plot(result, tmp / "quality_vs_cost.png")
    return out


__all__ = ["DIMENSIONS", "cheapest_passing", "plot", "report_dict", "report_markdown", "slice_drops", "tail_verdict", "write_report"]
