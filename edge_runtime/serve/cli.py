"""The `edge-serve` command: flags (each with its EDGE_* variable), checks, uvicorn, signals.

    edge-serve --bundle bundles/smollm2-135m [--host 127.0.0.1] [--port 8080] [--api-key KEY]

The bundle's manifest is read and checked once, before a port is bound, and handed to the
app, which opens the runtime in the background (`/health` answers 503 until it is ready).
SIGTERM (or Ctrl-C) stops accepting connections, lets accepted requests finish within
`--grace-s`, then exits 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from edge_runtime.bundle import Manifest, check_files, read_manifest
from edge_runtime.control.signals import SOURCES
from edge_runtime.control.tiers import AUTO, TIERS
from edge_runtime.errors import EdgeError, VariantError
from edge_runtime.runtime import RuntimeConfig
from edge_runtime.serve.app import ServerConfig, State, create_app

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
        help="comma-separated onnxruntime execution providers, preferred first (default: CUDA when present, then "
             "CPU) [EDGE_PROVIDERS]")
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
    add("--prefill-chunk", type=int, default=_env("PREFILL_CHUNK", "256"),
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
    add("--grace-s", type=float, default=_env("GRACE_S", "30.0"),
        help="on SIGTERM, seconds accepted requests may take to finish [EDGE_GRACE_S]")
    add("--log-level", choices=["debug", "info", "warning", "error"], default=_env("LOG_LEVEL", "info"),
        help="log verbosity [EDGE_LOG_LEVEL]")
    return ap


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    preload: str | tuple[str, ...] = args.preload
    if preload not in ("none", "first", "all"):
        preload = tuple(p.strip() for p in preload.split(",") if p.strip())
    rc = RuntimeConfig(
        threads=args.threads,
        providers=tuple(p.strip() for p in args.providers.split(",")) if args.providers else None,
        memory_budget_mb=args.memory_budget_mb, max_queue=args.max_queue, max_prompt_tokens=args.max_prompt_tokens,
        default_max_tokens=args.default_max_tokens, default_deadline_s=args.deadline_s,
        allow_ungated=args.allow_ungated, preload=preload, prefill_chunk=args.prefill_chunk, signals=args.signals,
        spin=args.spin, tier=args.tier)
    return ServerConfig(bundle=args.bundle, host=args.host, port=args.port, api_key=args.api_key or None,
                        alias=args.alias, max_body_bytes=args.max_body_bytes, grace_s=args.grace_s,
                        log_level=args.log_level, runtime=rc)


def check_bundle(config: ServerConfig) -> Manifest:
    """Fail fast, before binding a port: the manifest, its files, and at least one servable variant.

    Returns the manifest, read once here and handed on to `Runtime.open`."""
    manifest = read_manifest(config.bundle)
    check_files(config.bundle, manifest)
    if not config.runtime.allow_ungated and all(v.gate.status == "fail" for v in manifest.variants):
        raise VariantError(f"every variant of {config.bundle!r} failed its evaluation gate; run edge-eval again "
                           "or pass --allow-ungated")
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
    """Run uvicorn until SIGTERM/SIGINT; 0 after a clean shutdown, 1 if the bundle failed to open."""
    import uvicorn

    app = create_app(config, manifest=manifest)
    server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_level=config.log_level,
                                           timeout_graceful_shutdown=max(1, int(config.grace_s)), access_log=False))
    state: State = app.state.edge

    def fatal() -> None:
        server.should_exit = True

    state.on_fatal = fatal
    # uvicorn handles SIGTERM/SIGINT during `run` (graceful shutdown), then re-raises the signal
    # against the handlers it found: make those no-ops so that a clean shutdown exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run()
    if state.status == "error":
        print(f"edge-serve: error: {state.error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
