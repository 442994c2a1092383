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
from harness.evaluate import BundleEval, VariantEval
from harness.floors import DIMENSIONS
from harness.suite import SLICES

REPORT_FILES = ("report.md", "report.json", "quality_vs_cost.png")
TAIL = ("edge", "adversarial", "multilingual")  # the slices aggregate perplexity tends to hide
COLUMNS = ("common", "edge", "adversarial", "multilingual", "format", "instruction", "ppl_retention", "latency", "size")


# --------------------------------------------------------------------------- analysis


def slice_drops(result: BundleEval, choice_only: bool = False) -> dict[str, dict[str, dict[str, float]]]:
    """Per variant and slice: dense - variant accuracy, cases lost and gained, and 2 SE of the drop.

    The two runs see the same cases, so the drop's standard error comes from the paired
    disagreements: SE = sqrt(lost + gained - (lost - gained)^2 / n) / n. `share_lost` is
    the drop over the dense model's accuracy above chance (dense - chance): a slice the
    dense model barely clears cannot drop far in absolute terms, so absolute drops alone
    would make the hard slices look robust. `choice_only` keeps the log-likelihood cases
    (no generation, so no format or instruction effects).
    """
    dense = {c.id: c for c in result.variant(result.reference).cases}
    ch = chance(result, choice_only)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for v in result.variants:
        if v.name == result.reference:
            continue
        per: dict[str, dict[str, float]] = {}
        for s in SLICES:
            pairs = [(dense[c.id].correct, c.correct) for c in v.cases
                     if c.slice == s and c.id in dense and (c.type == "choice" or not choice_only)]
            if not pairs:
                continue
            n = len(pairs)
            lost = sum(1 for d, x in pairs if d and not x)
            gained = sum(1 for d, x in pairs if x and not d)
            var = max(lost + gained - (lost - gained) ** 2 / n, 0.0)
            above = sum(1 for d, _ in pairs if d) / n - ch.get(s, 0.0)
            drop = (lost - gained) / n
            per[s] = {"drop": drop, "lost": lost, "gained": gained, "n": n, "two_se": 2 * math.sqrt(var) / n,
                      "share_lost": drop / above if above > 0.05 else math.nan}
        out[v.name] = per
    return out


def tail_verdict(drops: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Whether each tail slice dropped more than `common`: in accuracy points (with whether the
    gap exceeds two standard errors) and as a share of the accuracy above chance."""
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
        share_gap = d["share_lost"] - c["share_lost"]
        out[s] = {"minus_common": round(gap, 4), "two_se": round(noise, 4), "more": gap > 0, "beyond_noise": gap > noise,
                  "share_minus_common": None if math.isnan(share_gap) else round(share_gap, 4),
                  "more_share": bool(share_gap > 0)}
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


def chance(result: BundleEval, choice_only: bool = False) -> dict[str, float]:
    """Per-slice accuracy of uniform guessing (generation cases count 0)."""
    out = {}
    for s in SLICES:
        cs = [c for c in result.suite.slice(s) if c.type == "choice" or not choice_only]
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
        "drops": {v: {sl: {k: _fin(x) if isinstance(x, float) else x for k, x in d.items()} for sl, d in per.items()}
                  for v, per in drops.items()},
        "tail_vs_common": {name: tail_verdict(d) for name, d in drops.items()},
        "choice_drops": {v: {sl: {k: _fin(x) if isinstance(x, float) else x for k, x in d.items()} for sl, d in per.items()}
                         for v, per in slice_drops(result, choice_only=True).items()},
        "choice_tail_vs_common": {name: tail_verdict(d) for name, d in slice_drops(result, choice_only=True).items()},
        "cheapest_passing": cheapest_passing(result),
    }


def _fin(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.0%}"


# --------------------------------------------------------------------------- Markdown


def _cell(ev: VariantEval, dim: str) -> str:
    if dim not in ev.scores:
        return "–"
    text = f"{ev.scores[dim]:.2f}"
    return f"**{text}** ✗" if dim in ev.gate.failed else text


def report_markdown(result: BundleEval) -> str:
    """A human-readable report: the gate table, drops per slice, the cheapest passing variant."""
    cols = [c for c in COLUMNS if any(c in v.scores for v in result.variants)]
    lines = _md_header(result) + _md_gate_table(result, cols) + _md_cheapest(result)
    for title, drops in (("Drop per slice from dense", slice_drops(result)),
                         ("Drop per slice from dense, choice cases only", slice_drops(result, choice_only=True))):
        if drops:
            lines += _md_drops(title, drops)
    lines += _md_dense_and_choice(result) + _md_languages_and_profiles(result)
    lines += ["", "![quality vs cost](quality_vs_cost.png)", ""]
    return "\n".join(lines)


def _md_header(result: BundleEval) -> list[str]:
    m, fl = result.manifest, result.floors
    return [
        f"# Evaluation: {m.model.source}",
        "",
        f"- bundle: `{result.bundle}`"
        + (f" (recipe `{m.extra['recipe']}`)" if isinstance(m.extra.get("recipe"), str) else "")
        + f"; reference (dense): `{result.reference}`",
        f"- suite {result.suite.version}: {len(result.suite.cases)} cases"
        + (f" (first {result.config.limit} per slice)" if result.config.limit else ""),
        f"- choice cases scored by `{result.config.choice_metric}` log-likelihood; held-out perplexity over "
        f"{result.tokens:,} tokens ({result.config.windows} windows of {result.config.window})",
        f"- latency: reference request of {result.config.latency_prompt} prompt + {result.config.latency_new} new tokens, "
        f"from {'the manifest cost' if result.latency_source == 'manifest' else 'timings on this machine'}",
        f"- floors: {'none (gate left pending)' if fl is None else f'`{fl.path}` version {fl.version}'}",
    ]


def _md_gate_table(result: BundleEval, cols: list[str]) -> list[str]:
    m, fl = result.manifest, result.floors
    lines = [
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
    return lines


def _md_cheapest(result: BundleEval) -> list[str]:
    best = cheapest_passing(result)
    lines = ["", "## Cheapest variant that clears every floor", ""]
    if result.floors is None:
        lines.append("No floors were given, so no variant was gated.")
    elif best is None:
        lines.append("**None**: no variant, not even the dense one, cleared every floor.")
    else:
        ev = result.variant(best)
        lines.append(f"**{best}**: latency {ev.scores.get('latency', float('nan')):.2f}× and size "
                     f"{ev.scores.get('size', float('nan')):.2f}× of dense.")
    return lines


def _md_drops(title: str, drops: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    lines = [
        "", f"## {title}", "",
        "Dense accuracy minus the variant's (positive = the variant is worse) ± two paired standard "
        "errors, the cases lost/gained against dense on the same cases, and in brackets the share of the "
        "dense model's accuracy above chance that was lost (the fair comparison between slices that start "
        "at different heights)." if "only" not in title else
        "The same on the log-likelihood cases alone: no generation, so the collapse of format and "
        "instruction following (which weighs most on `common`, where most generation cases are) is left out.",
        "",
        "| variant | " + " | ".join(s for s in SLICES) + " | tail loses more than common: points / share |",
        "|---|" + "---|" * len(SLICES) + "---|",
    ]
    for name, per in drops.items():
        cells = [
            f"{per[s]['drop']:+.3f} ±{per[s]['two_se']:.3f} (−{per[s]['lost']}/+{per[s]['gained']}) "
            f"[{_pct(per[s]['share_lost'])}]" if s in per else "–"
            for s in SLICES
        ]
        verdict = tail_verdict(per)
        words = ", ".join(
            f"{s}: {'yes' if x['more'] else 'no'}{'*' if x['beyond_noise'] else ''} / "
            f"{'yes' if x['more_share'] else 'no'}"
            for s, x in verdict.items()
        )
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {words} |")
    return lines + ["", "\\* the gap to common exceeds two standard errors."]


def _md_dense_and_choice(result: BundleEval) -> list[str]:
    ch = chance(result)
    dense = result.variant(result.reference)
    lines = ["", "## Dense model against chance", "", "| slice | dense | chance | cases |", "|---|---|---|---|"]
    for s in SLICES:
        if s in dense.scores:
            lines.append(f"| {s} | {dense.scores[s]:.3f} | {ch.get(s, 0):.3f} | {len(result.suite.slice(s))} |")

    lines += ["", "## Choice cases under both log-likelihood metrics", "",
              "| variant | " + " | ".join(f"{s} sum / norm" for s in SLICES) + " |", "|---|" + "---|" * len(SLICES)]
    for ev in result.variants:
        lines.append(f"| {ev.name} | " + " | ".join(
            f"{ev.choice[s]['sum']:.2f} / {ev.choice[s]['norm']:.2f}" if s in ev.choice else "–" for s in SLICES) + " |")
    return lines


def _md_languages_and_profiles(result: BundleEval) -> list[str]:
    lines: list[str] = []
    langs = sorted({k for ev in result.variants for k in per_language(result, ev)})
    if langs:
        lines += ["", "## Multilingual slice by language", "", "| variant | " + " | ".join(langs) + " |",
                  "|---|" + "---|" * len(langs)]
        for ev in result.variants:
            pl = per_language(result, ev)
            lines.append(f"| {ev.name} | " + " | ".join(f"{pl[k]:.2f}" if k in pl else "–" for k in langs) + " |")
    fl = result.floors
    if fl is not None and fl.profiles:
        lines += ["", "## Per-profile floors (delivered quality, for edge-sim)", ""]
        for prof, tbl in fl.profiles.items():
            lines.append(f"- `{prof}`: " + ", ".join(f"{k} ≥ {v:.2f}" for k, v in tbl.items()))
    return lines


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


def load_report(path: str | Path, bundle_dir: str | Path | None = None) -> BundleEval:
    """Rebuild an evaluation from its `report.json` (with per-case results), to rewrite the
    report without scoring again. The bundle and the suite file it names must still be there."""
    from edge_runtime.bundle import Gate, read_manifest
    from harness.evaluate import EvalConfig
    from harness.floors import Floors
    from harness.scoring import CaseResult
    from harness.suite import load_suite

    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
        bundle = str(bundle_dir or d["bundle"])
        suite = load_suite(d["suite"]["path"])
        if suite.version != d["suite"]["version"]:
            raise EvalError(f"{path}: scored on suite {d['suite']['version']!r}, the suite file is now {suite.version!r}")
        fl = d["floors"]
        floors = None if fl is None else Floors(
            floors=fl["floors"], ceilings=fl["ceilings"], profiles=fl["profiles"], version=fl["version"],
            suite_version=fl["suite_version"], path=fl["path"],
        )
        variants = tuple(
            VariantEval(
                e["name"], e["scores"], math.inf if e["perplexity"] is None else e["perplexity"],
                tuple(CaseResult.from_dict(c) for c in e["cases"]), e["choice"], e["latency_ms"], e["file_bytes"],
                Gate(e["gate"]["status"], tuple(e["gate"]["failed"]), {} if floors is None else {"floors_version": floors.version}),
                e["seconds"],
            )
            for e in (v["eval"] for v in d["variants"])
        )
        return BundleEval(bundle, read_manifest(bundle), suite, EvalConfig(**d["config"]), variants, d["reference"],
                          floors, d["latency_source"], d["heldout_tokens"])
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise EvalError(f"{path}: not a report.json with per-case results ({type(e).__name__}: {e})") from e


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


__all__ = ["DIMENSIONS", "cheapest_passing", "load_report", "plot", "report_dict", "report_markdown", "slice_drops",
           "tail_verdict", "write_report"]
