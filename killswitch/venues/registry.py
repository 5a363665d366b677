"""Venue kinds -> session factories. Adding a venue is one folder and one line here."""

from __future__ import annotations

from typing import Mapping
from urllib.parse import urlsplit

from killswitch.clock import Clock
from killswitch.secrets import Secret, SecretError
from killswitch.venues.base import HyperliquidConfig, OxfunConfig, VenueConfig, VenueSession, VertexConfig

VENUE_KINDS = ("oxfun", "vertex", "nado", "hyperliquid")


def resolve_credentials(cfg: VenueConfig, environ: Mapping[str, str] | None = None) -> dict[str, Secret]:
    if isinstance(cfg, OxfunConfig):
        return {"api_key": cfg.api_key.resolve(environ), "api_secret": cfg.api_secret.resolve(environ)}
    if isinstance(cfg, HyperliquidConfig):
        out = {"private_key": cfg.private_key.resolve(environ)}
        if cfg.master_key is not None:
            out["master_key"] = cfg.master_key.resolve(environ)
        return out
    if isinstance(cfg, VertexConfig):
        creds = {"private_key": cfg.private_key.resolve(environ)}
        if cfg.owner_private_key is not None:
            creds["owner_private_key"] = cfg.owner_private_key.resolve(environ)
        return creds
    raise ValueError(f"unknown venue config {type(cfg).__name__}")


def make_session(cfg: VenueConfig, credentials: Mapping[str, Secret], clock: Clock,
                 shared: dict | None = None) -> VenueSession:
    """``shared``: one dict per daemon for state its sessions share (OX.FUN's per-IP REST budget).

    Raises :class:`SecretError` (naming the reference) when a resolved secret is unusable."""
    if isinstance(cfg, OxfunConfig):
        from killswitch.venues.oxfun.session import OxfunSession, RestLimiter

        limiter = None
        if shared is not None:
            limiter = shared.setdefault(("oxfun-rest", urlsplit(cfg.rest_url).netloc.lower()), RestLimiter())
        return OxfunSession(cfg, api_key=credentials["api_key"], api_secret=credentials["api_secret"], clock=clock,
                            rest_limiter=limiter)
    if isinstance(cfg, VertexConfig):
        from killswitch.venues.vertex.session import VertexSession
        from killswitch.venues.vertex.signing import FastSigner

        try:
            FastSigner(credentials["private_key"])  # a malformed key: a start-up error, not a traceback
        except ValueError as exc:  # the signer's own words ("private key is not hex"), never the value
            raise SecretError(f"secret {cfg.private_key.describe()}: {exc}") from None
        return VertexSession(cfg, private_key=credentials["private_key"], clock=clock,
                             owner_key=credentials.get("owner_private_key"))
    if isinstance(cfg, HyperliquidConfig):
        from killswitch.venues.hyperliquid.session import HyperliquidSession
        from killswitch.venues.hyperliquid.signing import FastSigner as HlSigner

        for key, ref in (("private_key", cfg.private_key), ("master_key", cfg.master_key)):
            try:
                if key in credentials:
                    HlSigner(credentials[key])  # a malformed key: a start-up error, not a traceback
            except ValueError as exc:
                raise SecretError(f"secret {ref.describe()}: {exc}") from None
        # The nonce high-water mark lives in the daemon's state_dir (shared["state_dir"]).
        return HyperliquidSession(cfg, private_key=credentials["private_key"], clock=clock,
                                  state_dir=(shared or {}).get("state_dir"), master_key=credentials.get("master_key"))
    raise ValueError(f"unknown venue config {type(cfg).__name__}")
