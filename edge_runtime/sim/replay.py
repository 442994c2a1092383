"""Profile replay through the real runtime: a `GenerationBackend` for `edge_runtime.sim.simulator`.

The simulator decides on a virtual clock (its device model supplies battery, heat and
queue); with `RuntimeBackend` each decision is then *run*: the chosen variant generates
the request's tokens through `Runtime.generate` (pinned, so the runtime's own controller
stays out of it), and the measured compute time replaces the manifest's estimate.

    rt = Runtime.open(bundle, signals=StaticSource())
    sim = Simulator(profile, VariantCatalog.from_manifest(rt.manifest), backend=RuntimeBackend(rt))
    report = sim.run(policy)
    for r in backend.results: print(r.variant, r.reason, r.timings.decode_tokens_per_s)

Prompts are real text (a fixed passage, tokenized and repeated to the requested length);
prompt and new-token counts are clipped to the bundle's context length.
"""

from __future__ import annotations

from edge_runtime.control.catalog import VariantCatalog
from edge_runtime.request import Result
from edge_runtime.runtime import Runtime
from edge_runtime.sim.simulator import Generation
from edge_runtime.sim.workload import Request

PASSAGE = (
    "The device answers questions about its own logs, sensors and schedules. It runs on a battery "
    "most of the day and on mains power at night, and it keeps working when the network is gone. "
)


class RuntimeBackend:
    """Runs each simulated request on the chosen variant; keeps every `Result` in `results`.

    Args:
        runtime: an open runtime over the bundle the simulator's catalog was built from.
        include_load: count a cold variant's load time as compute (a real device pays it).
        catalog: when given, each request also records what the manifest's costs predicted,
            so that `calibration()` can compare the simulation with the runtime.
    """

    def __init__(self, runtime: Runtime, include_load: bool = True, catalog: VariantCatalog | None = None) -> None:
        self.runtime = runtime
        self.include_load = include_load
        self.catalog = catalog
        self.results: list[Result] = []
        self.work: list[tuple[int, float, float]] = []  # (variant, predicted s, measured s)
        self._text = runtime.tokenizer.encode(PASSAGE, add_special_tokens=False)

    def prompt(self, n: int) -> list[int]:
        reps = n // len(self._text) + 1
        return (self._text * reps)[:n]

    def generate(self, request: Request, variant: int) -> Generation:
        ctx = self.runtime.context_length
        prompt = max(1, min(request.prompt_tokens, self.runtime.max_prompt_tokens))
        new = max(1, min(request.max_new_tokens, ctx - prompt))
        r = self.runtime.generate(prompt_ids=self.prompt(prompt), max_tokens=new, ignore_eos=True,
                                  variant=self.runtime.manifest.actions[variant], difficulty=request.hard)
        self.results.append(r)
        t = r.timings
        work = t.prefill_s + t.decode_s + (t.load_s if self.include_load else 0.0)
        if self.catalog is not None:
            self.work.append((variant, self.catalog.work_s(variant, prompt, t.completion_tokens), work))
        return Generation(work_s=work, new_tokens=t.completion_tokens)

    def calibration(self) -> dict[str, dict[str, float]]:
        """Per variant served: requests, predicted and measured compute seconds, and their ratio."""
        out: dict[str, dict[str, float]] = {}
        names = self.runtime.manifest.actions
        for variant, predicted, measured in self.work:
            row = out.setdefault(names[variant], {"requests": 0, "predicted_s": 0.0, "measured_s": 0.0})
            row["requests"] += 1
            row["predicted_s"] += predicted
            row["measured_s"] += measured
        for row in out.values():
            row["measured_over_predicted"] = row["measured_s"] / row["predicted_s"] if row["predicted_s"] else 0.0
        return out
