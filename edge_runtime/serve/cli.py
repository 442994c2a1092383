"""The `edge-serve` command: flags (each with its EDGE_* variable), checks, uvicorn, signals.

    edge-serve --bundle bundles/smollm2-135m [--host 127.0.0.1] [--port 8080] [--api-key KEY]

The bundle's manifest is read and checked once, before a port is bound, and handed to the
app, which opens the runtime in the background (`/health` answers 503 until it is ready).
SIGTERM (or Ctrl-C) stops accepting connections, lets accepted requests finish within
`--grace-s` (past it they get 503 with Retry-After), then exits 0. A bundle that fails to
open in the background stops the server with exit status 2 and the reason on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from edge_runtime.bundle import Manifest, check_files, read_manifest
from edge_runtime.control.signals import SOURCES
from edge_runtime.control.tiers import AUTO, TIERS
from edge_runtime.engine.providers import parse as parse_providers
from edge_runtime.engine.providers import resolve as resolve_providers
from edge_runtime.engine.residency import PREFILL_CHUNK
from edge_runtime.errors import EdgeError, VariantError
from edge_runtime.extras import add_version
from edge_runtime.runtime import RuntimeConfig
from edge_runtime.serve.app import ServerConfig, State, create_app
from edge_runtime.serve.http import HeaderTimeoutH11
from edge_runtime.shadow.capture import load_redactions
from edge_runtime.shadow.config import ShadowConfig

log = logging.getLogger("edge_runtime.serve")


def _env(name: str, default: str | None) -> str | None:
    """EDGE_<name>, else `default`; argparse converts string defaults with the flag's `type`,
    so a malformed variable is reported like a malformed flag."""
    value = os.environ.get(f"EDGE_{name}", "")
    return value if value.strip() else default


def _bool_env(name: str) -> bool:
    return str(_env(name, "")).strip().lower() in ("1", "true", "yes", "on")


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" only where there is a value to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="edge-serve",
        description="Serve an adaptive-sparsity bundle over an OpenAI-compatible HTTP API. Every flag can also be "
                    "set with the EDGE_* environment variable shown; the flag wins.",
        formatter_class=_Help,
    )
    add = ap.add_argument
    add("--bundle", default=_env("BUNDLE", None), help="bundle directory, made by edge-export (required) [EDGE_BUNDLE]")
    add("--host", default=_env("HOST", "127.0.0.1"), help="address to bind; 0.0.0.0 exposes the server [EDGE_HOST]")
    add("--port", type=int, default=_env("PORT", "8080"), help="port [EDGE_PORT]")
    add("--api-key", default=_env("API_KEY", None),
        help="require 'Authorization: Bearer KEY' on every route but /health; prefer the variable to the flag, "
             "which other users can see in the process list [EDGE_API_KEY]")
    add("--alias", default=_env("ALIAS", None),
        help="model name that lets the controller choose (default: the bundle's directory name) [EDGE_ALIAS]")
    add("--threads", type=int, default=_env("THREADS", None),
        help="onnxruntime threads per forward pass (default: every core this process may use) [EDGE_THREADS]")
    add("--providers", default=_env("PROVIDERS", None),
        help="comma-separated onnxruntime execution providers, preferred first, each with :key=value options, "
             "e.g. tensorrt:trt_engine_cache_path=/var/cache/trt,cuda:device_id=0,cpu (short names: cpu, cuda, "
             "tensorrt, rocm, openvino, coreml, dml, qnn; default: CUDA when present, then CPU) [EDGE_PROVIDERS]")
    add("--memory-budget-mb", type=float, default=_env("MEMORY_BUDGET_MB", None),
        help="estimated MiB of loaded variants at most; least recently used ones are unloaded (default: no limit) "
             "[EDGE_MEMORY_BUDGET_MB]")
    add("--max-queue", type=int, default=_env("MAX_QUEUE", "16"),
        help="requests waiting before new ones get 429 [EDGE_MAX_QUEUE]")
    add("--max-prompt-tokens", type=int, default=_env("MAX_PROMPT_TOKENS", None),
        help="longer prompts get 400 (default: the context length - 1) [EDGE_MAX_PROMPT_TOKENS]")
    add("--default-max-tokens", type=int, default=_env("DEFAULT_MAX_TOKENS", "256"),
        help="max_tokens of requests that set none [EDGE_DEFAULT_MAX_TOKENS]")
    add("--deadline-s", type=float, default=_env("DEADLINE_S", None),
        help="deadline of requests that set none: past it, a queued request gets 408 (default: none) "
             "[EDGE_DEADLINE_S]")
    add("--max-body-bytes", type=int, default=_env("MAX_BODY_BYTES", "1048576"),
        help="larger request bodies get 413 [EDGE_MAX_BODY_BYTES]")
    add("--preload", default=_env("PRELOAD", "first"),
        help="variants loaded before /health says ok: none, first, all, or comma-separated names [EDGE_PRELOAD]")
    add("--prefill-chunk", type=int, default=_env("PREFILL_CHUNK", str(PREFILL_CHUNK)),
        help="prompt tokens per forward pass [EDGE_PREFILL_CHUNK]")
    add("--signals", choices=sorted(SOURCES), default=_env("SIGNALS", "auto"),
        help="where battery and thermal readings come from [EDGE_SIGNALS]")
    add("--spin", action="store_true", default=_bool_env("SPIN"),
        help="let onnxruntime's threads busy-wait between forward passes: slightly faster when the device "
             "does nothing else, much slower when other processes share the cores [EDGE_SPIN]")
    add("--tier", choices=[AUTO, *TIERS], default=_env("TIER", AUTO),
        help="floors tier: offer only variants that clear it; auto picks normal, saver or critical from the "
             "battery and the temperature [EDGE_TIER]")
    add("--allow-ungated", action="store_true", default=_bool_env("ALLOW_UNGATED"),
        help="also serve variants whose evaluation gate failed (logged loudly) [EDGE_ALLOW_UNGATED]")
    _shadow_flags(ap)
    add("--grace-s", type=float, default=_env("GRACE_S", "30.0"),
        help="on SIGTERM, seconds accepted requests may take to finish; past it they get 503 [EDGE_GRACE_S]")
    add("--timeout-s", type=float, default=_env("TIMEOUT_S", "30.0"),
        help="seconds a client may take to send a request's headers, and each piece of its body (408); "
             "slower connections are closed [EDGE_TIMEOUT_S]")
    add("--max-connections", type=int, default=_env("MAX_CONNECTIONS", "64"),
        help="open connections and requests at most; past it uvicorn answers 503 at once [EDGE_MAX_CONNECTIONS]")
    add("--log-level", choices=["debug", "info", "warning", "error"], default=_env("LOG_LEVEL", "info"),
        help="log verbosity [EDGE_LOG_LEVEL]")
    add_version(ap)
    return ap


def _shadow_flags(ap: argparse.ArgumentParser) -> None:
    """Shadow scoring, drift and capture (edge_runtime.shadow; docs/runtime.md, "Shadow scoring")."""
    g = ap.add_argument_group("shadow scoring (idle-time evaluation against the dense variant; off by default)")
    add, d = g.add_argument, ShadowConfig()
    add("--shadow", action="store_true", default=_bool_env("SHADOW"),
        help="re-run a share of served requests on the dense variant when the device is idle, and publish "
             "per-variant drift on /metrics and /status [EDGE_SHADOW]")
    add("--shadow-sample", type=float, default=_env("SHADOW_SAMPLE", str(d.sample)),
        help="share of served requests shadow-scored, 0-1 [EDGE_SHADOW_SAMPLE]")
    add("--shadow-all-non-dense", action="store_true", default=_bool_env("SHADOW_ALL_NON_DENSE"),
        help="also shadow-score every request a non-dense variant served [EDGE_SHADOW_ALL_NON_DENSE]")
    add("--shadow-min-battery", type=float, default=_env("SHADOW_MIN_BATTERY", str(d.min_battery)),
        help="on battery, shadow work only above this charge, 0-1 (on mains: always) [EDGE_SHADOW_MIN_BATTERY]")
    add("--shadow-window", type=int, default=_env("SHADOW_WINDOW", str(d.window)),
        help="rolling window of shadow scores per variant and dimension [EDGE_SHADOW_WINDOW]")
    add("--shadow-agreement-floor", type=float, default=_env("SHADOW_AGREEMENT_FLOOR", str(d.agreement_floor)),
        help="token F1 with the dense answer below which a variant is reported as drifting "
             "[EDGE_SHADOW_AGREEMENT_FLOOR]")
    add("--shadow-fence", action="store_true", default=_bool_env("SHADOW_FENCE"),
        help="fence a variant whose own shadow score falls below a floor [EDGE_SHADOW_FENCE]")
    add("--capture-dir", default=_env("CAPTURE_DIR", None),
        help="opt-in: write shadow-scored requests as evaluation cases (suite JSON Lines) to DIR/captured.jsonl; "
             "prompts stay on this device (default: no capture) [EDGE_CAPTURE_DIR]")
    add("--capture-max-bytes", type=int, default=_env("CAPTURE_MAX_BYTES", str(d.capture_max_bytes)),
        help="the capture file's size at most; the oldest cases leave first [EDGE_CAPTURE_MAX_BYTES]")
    add("--capture-max-age-s", type=float, default=_env("CAPTURE_MAX_AGE_S", str(d.capture_max_age_s)),
        help="captured cases older than this are dropped [EDGE_CAPTURE_MAX_AGE_S]")
    add("--redact", default=_env("REDACT", None),
        help="file of regular expressions, one a line, whose matches become [REDACTED] before anything is "
             "captured; a pattern that does not compile stops the server at start [EDGE_REDACT]")


def _shadow_config(args: argparse.Namespace) -> ShadowConfig:
    return ShadowConfig(
        enabled=args.shadow, sample=args.shadow_sample, all_non_dense=args.shadow_all_non_dense,
        min_battery=args.shadow_min_battery, window=args.shadow_window, agreement_floor=args.shadow_agreement_floor,
        fence=args.shadow_fence, capture_dir=Path(args.capture_dir) if args.capture_dir else None,
        capture_max_bytes=args.capture_max_bytes, capture_max_age_s=args.capture_max_age_s,
        redact=Path(args.redact) if args.redact else None)
def _check_numbers(args: argparse.Namespace) -> None:
    """The server's own numeric flags, said as one line before anything starts (the runtime's are
    checked by `RuntimeConfig`)."""
    for flag, value, least in (("--port", args.port, 0), ("--max-body-bytes", args.max_body_bytes, 1),
                               ("--grace-s", args.grace_s, 0), ("--timeout-s", args.timeout_s, 1e-9),
                               ("--max-connections", args.max_connections, 1)):
        if value is not None and not value >= least:
            raise ValueError(f"{flag} must be {'> 0' if least == 1e-9 else f'>= {least}'}, got {value}")


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    preload: str | tuple[str, ...] = args.preload
    if preload not in ("none", "first", "all"):
        preload = tuple(p.strip() for p in preload.split(",") if p.strip())
    rc = RuntimeConfig(
        threads=args.threads,
        providers=parse_providers(args.providers),
        memory_budget_mb=args.memory_budget_mb, max_queue=args.max_queue, max_prompt_tokens=args.max_prompt_tokens,
        default_max_tokens=args.default_max_tokens, default_deadline_s=args.deadline_s,
        allow_ungated=args.allow_ungated, preload=preload, prefill_chunk=args.prefill_chunk, signals=args.signals,
        spin=args.spin, shadow=_shadow_config(args), tier=args.tier)
    return ServerConfig(bundle=args.bundle, host=args.host, port=args.port, api_key=args.api_key or None,
                        alias=args.alias, max_body_bytes=args.max_body_bytes, grace_s=args.grace_s,
                        timeout_s=args.timeout_s, max_connections=args.max_connections, log_level=args.log_level,
                        runtime=rc)


def check_bundle(config: ServerConfig) -> Manifest:
    """Fail fast, before binding a port: the manifest, its files, and at least one servable variant.

    Returns the manifest, read once here and handed on to `Runtime.open`."""
    resolve_providers(config.runtime.providers)  # one line listing the available ones, before anything loads
    manifest = read_manifest(config.bundle)
    check_files(config.bundle, manifest)
    if not config.runtime.allow_ungated and all(v.gate.status == "fail" for v in manifest.variants):
        raise VariantError(f"every variant of {config.bundle!r} failed its evaluation gate; run edge-eval again "
                           "or pass --allow-ungated")
    if config.runtime.shadow.redact is not None:  # refused before a port is bound, with the pattern named
        load_redactions(config.runtime.shadow.redact)
    if config.runtime.preload not in ("none", "first", "all"):
        for name in config.runtime.preload:
            manifest.variant(name)
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if not args.bundle:
        ap.error("--bundle (or EDGE_BUNDLE) is required")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        _check_numbers(args)
        config = config_from_args(args)
        manifest = check_bundle(config)
    except (EdgeError, ValueError) as e:
        print(f"edge-serve: error: {e}", file=sys.stderr)
        return 2
    if config.host not in ("127.0.0.1", "localhost", "::1") and not config.api_key:
        log.warning("listening on %s without an API key: anyone who can reach this port can use the model; "
                    "set EDGE_API_KEY", config.host)
    return serve(config, manifest)


def serve(config: ServerConfig, manifest: Manifest | None = None) -> int:
    """Run uvicorn until SIGTERM/SIGINT; 0 after a clean shutdown, 2 if the bundle failed to open in the
    background (as a bad bundle found before binding does, so that supervisors do not restart in a
    loop on it), 1 if opening it failed some other way (out of memory, say).

    On shutdown the runtime drains first (accepted requests get `--grace-s`, then 503), while
    uvicorn waits a little longer for the answers to be written."""
    import uvicorn
    from starlette.concurrency import run_in_threadpool

    app = create_app(config, manifest=manifest)
    state: State = app.state.edge

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            drain = asyncio.ensure_future(run_in_threadpool(state.stop, config.grace_s))
            await super().shutdown(sockets)
            await drain

    server = Server(uvicorn.Config(
        app, host=config.host, port=config.port, log_level=config.log_level, access_log=False,
        timeout_graceful_shutdown=max(1, int(config.grace_s) + 10), limit_concurrency=config.max_connections,
        http=HeaderTimeoutH11.with_timeout(config.timeout_s)))

    def fatal() -> None:
        server.should_exit = True

    state.on_fatal = fatal
    # uvicorn handles SIGTERM/SIGINT during `run` (graceful shutdown), then re-raises the signal
    # against the handlers it found: make those no-ops so that a clean shutdown exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run()
    if state.status == "error":
        print(f"edge-serve: error: the bundle could not be opened: {state.error}", file=sys.stderr)
        return state.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
