"""Prometheus metrics of one runtime, every name prefixed `edge_`.

Each `Runtime` owns a `Metrics` over its own `CollectorRegistry` (two runtimes in one
process, as in the tests, do not collide); `edge-serve` publishes it at `/metrics`.

| metric | type | labels |
|---|---|---|
| `edge_requests_total` | counter | variant, finish_reason (stop, length, cancelled, error) |
| `edge_requests_rejected_total` | counter | reason (overloaded, deadline, invalid, unavailable, shutdown) |
| `edge_prompt_tokens_total`, `edge_completion_tokens_total` | counter | variant |
| `edge_request_duration_seconds` | histogram | variant |
| `edge_queue_wait_seconds`, `edge_prefill_seconds` | histogram | |
| `edge_time_per_output_token_seconds` | histogram | variant |
| `edge_decision_seconds` | histogram | |
| `edge_queue_depth`, `edge_requests_running` | gauge | |
| `edge_variant_selections_total` | counter | variant, source (policy, rule, fallback, pinned, retry) |
| `edge_policy_fallbacks_total` | counter | |
| `edge_variant_loads_total`, `edge_variant_load_seconds` | counter, histogram | variant |
| `edge_variant_failures_total` | counter | variant |
| `edge_variant_loaded`, `edge_variant_fenced` | gauge | variant |
| `edge_signal_battery_level`, `edge_signal_plugged_in`, `edge_signal_temperature_celsius`, `edge_signal_throttled`, `edge_signal_cpu_load`, `edge_recent_ms_per_token` | gauge | |
| `edge_energy_joules_total` | counter | variant (only where the board reports power: edge_runtime.control.power) |
| `edge_signal_power_watts` | gauge | (NaN where no power source exists) |
| `edge_drafted_tokens_total`, `edge_accepted_tokens_total` | counter | pair |
| `edge_http_requests_total` | counter | route, status (edge-serve only) |
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from edge_runtime.control.observation import DeviceState

PREFIX = "edge"
_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_SLOW = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_TOKEN = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0)


class Metrics:
    """The runtime's counters, histograms and gauges."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        p = PREFIX
        self.requests = Counter(f"{p}_requests", "Requests finished", ["variant", "finish_reason"], registry=r)
        self.rejected = Counter(f"{p}_requests_rejected", "Requests refused before generating", ["reason"],
                                registry=r)
        self.prompt_tokens = Counter(f"{p}_prompt_tokens", "Prompt tokens processed", ["variant"], registry=r)
        self.completion_tokens = Counter(f"{p}_completion_tokens", "Tokens generated", ["variant"], registry=r)
        self.duration = Histogram(f"{p}_request_duration_seconds", "Submitted to finished", ["variant"],
                                  buckets=_SLOW, registry=r)
        self.queue_wait = Histogram(f"{p}_queue_wait_seconds", "Time waiting in the queue", buckets=_SLOW,
                                    registry=r)
        self.prefill = Histogram(f"{p}_prefill_seconds", "Prompt processing to the first token", buckets=_SLOW,
                                 registry=r)
        self.per_token = Histogram(f"{p}_time_per_output_token_seconds", "Decode time per token", ["variant"],
                                   buckets=_TOKEN, registry=r)
        self.decision = Histogram(f"{p}_decision_seconds", "Signals + observation + policy", buckets=_FAST,
                                  registry=r)
        self.queue_depth = Gauge(f"{p}_queue_depth", "Requests waiting", registry=r)
        self.running = Gauge(f"{p}_requests_running", "Requests generating", registry=r)
        self.selections = Counter(f"{p}_variant_selections", "Variant chosen for a request", ["variant", "source"],
                                  registry=r)
        self.fallbacks = Counter(f"{p}_policy_fallbacks", "Decisions the rule fallback made because the trained "
                                 "policy failed", registry=r)
        self.loads = Counter(f"{p}_variant_loads", "Variant sessions loaded", ["variant"], registry=r)
        self.load_seconds = Histogram(f"{p}_variant_load_seconds", "Time to load a cold variant", ["variant"],
                                      buckets=_SLOW, registry=r)
        self.failures = Counter(f"{p}_variant_failures", "Variant load or run failures", ["variant"], registry=r)
        self.loaded = Gauge(f"{p}_variant_loaded", "1 while the variant is loaded", ["variant"], registry=r)
        self.fenced = Gauge(f"{p}_variant_fenced", "1 once the variant is fenced", ["variant"], registry=r)
        self.battery = Gauge(f"{p}_signal_battery_level", "Battery state of charge 0-1", registry=r)
        self.plugged = Gauge(f"{p}_signal_plugged_in", "1 on external power", registry=r)
        self.temperature = Gauge(f"{p}_signal_temperature_celsius", "Hottest sensor", registry=r)
        self.throttled = Gauge(f"{p}_signal_throttled", "1 while throttled", registry=r)
        self.cpu_load = Gauge(f"{p}_signal_cpu_load", "CPU utilisation 0-1", registry=r)
        self.recent_latency = Gauge(f"{p}_recent_ms_per_token", "Recent decode latency (EWMA)", registry=r)
        self.energy = Counter(f"{p}_energy_joules", "Measured energy of finished requests", ["variant"], registry=r)
        self.power = Gauge(f"{p}_signal_power_watts", "Measured board power (NaN: no source)", registry=r)
        self.power.set(float("nan"))
        self.drafted = Counter(f"{p}_drafted_tokens", "Tokens a speculative pair's drafter proposed", ["pair"],
                               registry=r)
        self.accepted = Counter(f"{p}_accepted_tokens", "Drafted tokens the pair's verifier kept", ["pair"],
                                registry=r)
        self.http = Counter(f"{p}_http_requests", "HTTP requests answered", ["route", "status"], registry=r)

    def signals(self, s: DeviceState) -> None:
        self.battery.set(s.battery_level)
        self.plugged.set(float(s.plugged_in))
        self.temperature.set(s.temperature_c)
        self.throttled.set(float(s.throttled))
        self.cpu_load.set(s.cpu_load)
        if s.power_w is not None:
            self.power.set(s.power_w)

    def export(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
