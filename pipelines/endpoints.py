"""The owner's endpoint registry: which servers may receive which secret.

A key (an environment variable / Space secret) is attached to a request only when every URL of
the model is a URL of a registry entry naming that same variable. A recipe can point a model
anywhere, but it can never make the server send a key there. The registry is the owner's: a
YAML (or JSON) list in ``$CAPYUI_ENDPOINTS`` (a file path, or the list inline) and/or the file
``endpoints.yaml`` in the workspace folder::

    - id: openai
      base_urls: [https://api.openai.com/v1]
      api_key_env: OPENAI_API_KEY
      models: [gpt-4o, gpt-4o-mini]        # empty or absent: any model
    - id: local-vllm
      base_url: http://10.0.0.5:8000/v1     # private addresses are fine for registry entries
      models: [argilla/notus-7b-v1]
      trust_remote_code: true               # vllm backend: this model may run repository code

Strict mode (on a Space, with ``CAPYUI_AUTH``, with a registry, or ``CAPYUI_STRICT_ENDPOINTS=1``):
keys only go to registry URLs. Without any of these (one person's laptop, the CLI) a model's
``api_key_env`` is used as named, as before. On a Space (or ``CAPYUI_BLOCK_PRIVATE_URLS=1``) a
URL that is not in the registry and resolves to a loopback, private, link-local or reserved
address is refused outright (the server is not a proxy into its own network).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipelines.secrets import check_env_name, url_has_credentials

REGISTRY_FILE = "endpoints.yaml"


class EndpointError(ValueError):
    """A URL or key use the registry does not allow; the message is one line, secret-free."""


class Endpoint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    base_url: str | None = None
    base_urls: list[str] = Field(default_factory=list)
    api_key_env: str | None = None
    models: list[str] = Field(default_factory=list)
    trust_remote_code: bool = False

    @field_validator("api_key_env")
    @classmethod
    def _env(cls, v: str | None) -> str | None:
        return None if v is None else check_env_name(v)

    @property
    def urls(self) -> list[str]:
        return [normalise(u) for u in ([self.base_url] if self.base_url else []) + self.base_urls]

    def allows_model(self, model: str) -> bool:
        return not self.models or model in self.models


def normalise(url: str) -> str:
    parts = urlsplit(url.strip())
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = (parts.hostname or "").lower()
    return f"{parts.scheme.lower()}://{host}:{port}{parts.path.rstrip('/')}"


def _data_dir() -> Path:
    from pipelines.store import default_data_dir

    return default_data_dir()


def load_registry(data_dir: str | os.PathLike[str] | None = None) -> list[Endpoint]:
    """Every registry entry (env first, then the workspace file). Raises EndpointError."""
    sources: list[tuple[str, str]] = []
    raw = os.environ.get("CAPYUI_ENDPOINTS", "").strip()
    if raw:
        p = Path(raw)
        if "\n" not in raw and len(raw) < 4096 and p.is_file():
            sources.append((str(p), p.read_text("utf-8")))
        else:
            sources.append(("$CAPYUI_ENDPOINTS", raw))
    f = Path(data_dir) / REGISTRY_FILE if data_dir is not None else _data_dir() / REGISTRY_FILE
    if f.is_file():
        sources.append((str(f), f.read_text("utf-8")))
    out: list[Endpoint] = []
    for where, text in sources:
        from pipelines.recipe import RecipeError, safe_load_yaml

        try:
            data = safe_load_yaml(text, name=where)
        except (RecipeError, yaml.YAMLError):
            raise EndpointError(f"endpoint registry {where}: not valid YAML") from None
        if isinstance(data, dict):
            data = data.get("endpoints", [])
        if not isinstance(data, list):
            raise EndpointError(f"endpoint registry {where}: a list of endpoints")
        for i, item in enumerate(data):
            try:
                ep = Endpoint.model_validate(item)
            except ValidationError as exc:
                err = exc.errors()[0]
                loc = ".".join(str(x) for x in err["loc"])
                raise EndpointError(
                    f"endpoint registry {where}, entry {i + 1}: {loc}: "
                    f"{err['msg'].removeprefix('Value error, ')}"
                ) from None
            for u in ep.urls:
                if url_has_credentials(u):
                    raise EndpointError(f"endpoint registry {where}: {ep.id}: URL with credentials")
            out.append(ep)
    return out


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def on_space() -> bool:
    return bool(os.environ.get("SPACE_ID"))


def strict(registry: list[Endpoint]) -> bool:
    return bool(
        registry or on_space() or os.environ.get("CAPYUI_AUTH") or _flag("CAPYUI_STRICT_ENDPOINTS")
    )


def block_private() -> bool:
    return on_space() or _flag("CAPYUI_BLOCK_PRIVATE_URLS")


def entry_for(url: str, registry: list[Endpoint]) -> Endpoint | None:
    n = normalise(url)
    return next((e for e in registry if n in e.urls), None)


def _private(host: str) -> bool:
    try:
        infos = socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError, OSError):
        return False  # does not resolve: the request fails on its own, nothing to reach
    for info in infos:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address
        ip = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        mapped = getattr(ip, "ipv4_mapped", None)
        if mapped is not None:
            ip = mapped
        if (
            ip.is_loopback
            or ip.is_private
            or ip.is_link_local
            or ip.is_reserved
            or ip.is_multicast
            or ip.is_unspecified
        ):
            return True
    return False


def check_urls(urls: list[str], registry: list[Endpoint] | None = None) -> None:
    """Refuse URLs with credentials, and (Space) non-registry URLs into private address space."""
    reg = load_registry() if registry is None else registry
    for url in urls:
        if url_has_credentials(url):
            raise EndpointError("a URL must not carry credentials (user:password@ or a key)")
        if block_private() and entry_for(url, reg) is None:
            host = urlsplit(url).hostname or ""
            if _private(host):
                raise EndpointError(
                    f"{host} is a loopback, private or link-local address and not in the "
                    "owner's endpoint registry: refused"
                )


def api_key_for(urls: list[str], api_key_env: str | None, model: str = "") -> str | None:
    """The key to send to ``urls``, or None for no key. Raises EndpointError when the recipe
    names a key for URLs the owner did not register for it (strict mode)."""
    registry = load_registry()
    check_urls(urls, registry)
    if not api_key_env:
        return None
    if strict(registry):
        for url in urls:
            ep = entry_for(url, registry)
            if ep is None or ep.api_key_env != api_key_env:
                raise EndpointError(
                    f"{api_key_env} is sent only to the endpoints the owner registered for it "
                    f"({urlsplit(url).hostname} is not one): add it to the endpoint registry"
                )
            if model and not ep.allows_model(model):
                raise EndpointError(f"model {model!r} is not allowed on endpoint {ep.id}")
    value = os.environ.get(api_key_env)
    if not value:
        raise EndpointError(
            f"environment variable {api_key_env} is not set (it should hold the API key)"
        )
    return value


def trust_remote_code(model: str) -> bool:
    """Whether the registry lets the in-process vllm backend run ``model``'s repository code."""
    try:
        registry = load_registry()
    except EndpointError:
        return False
    return any(e.trust_remote_code and model in e.models for e in registry)
